"""The blob store on S3, against the local stack's object store over real HTTP: blobs
are objects in the bucket, large writes go as multipart uploads, a failed write leaves
nothing behind, and failures carry the platform's reasons."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sinks.blobs import BlobStore
from sinks.s3 import Bucket
from tests.fixtures.network import free_port
from tests.fixtures.s3 import s3_settings
from vidinsight.errors import PermanentError, Reason, TransientError
from vidinsight.settings import Settings

MIB = 1024**2


def object_keys(settings: Settings) -> dict[str, int]:
    """The objects under the store's prefix, as boto3 lists them, with their sizes."""
    bucket = Bucket.from_uri(settings.blob_root_uri, settings)
    listed = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=bucket.prefix)
    start = len(bucket.object_key(""))
    return {item["Key"][start:]: item["Size"] for item in listed.get("Contents", [])}


def test_a_blob_is_an_object_in_the_bucket(s3_store: tuple[BlobStore, Settings]) -> None:
    store, settings = s3_store
    uri = store.put_bytes(b"keyframe bytes", "frames/job-1/0000-0001.jpg")
    assert uri == f"{settings.blob_root_uri}/frames/job-1/0000-0001.jpg"
    assert object_keys(settings) == {"frames/job-1/0000-0001.jpg": 14}
    assert store.size(uri) == 14
    with store.local_path(uri) as path:
        assert path.read_bytes() == b"keyframe bytes"
    store.delete(uri)
    store.delete(uri)  # one already gone is fine
    assert object_keys(settings) == {}


def test_a_large_write_streams_as_a_multipart_upload(
    s3_store: tuple[BlobStore, Settings], tmp_path: Path
) -> None:
    """12 MiB written 64 KiB at a time with 5 MiB parts: three parts, never more than a
    part held in memory, and the bytes that come back are the bytes that went."""
    store, settings = s3_store
    data = os.urandom(12 * MIB)
    with store.open_write("media/job-2/source") as out:
        for offset in range(0, len(data), 64 * 1024):
            out.write(data[offset : offset + 64 * 1024])
            assert len(out._buffer) < settings.s3_part_bytes  # type: ignore[attr-defined]
    uri = store.uri("media/job-2/source")
    bucket = Bucket.from_uri(settings.blob_root_uri, settings)
    key = bucket.object_key("media/job-2/source")
    head = bucket.client.head_object(Bucket=bucket.name, Key=key)
    assert head["ETag"].strip('"').endswith("-3")
    with store.local_path(uri) as path:
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_a_write_that_fails_leaves_no_object_and_no_parts(
    s3_store: tuple[BlobStore, Settings],
) -> None:
    store, settings = s3_store
    with (
        pytest.raises(RuntimeError, match="the client went away"),
        store.open_write("media/job-3/source") as out,
    ):
        out.write(os.urandom(11 * MIB))  # two parts sent
        raise RuntimeError("the client went away")
    assert object_keys(settings) == {}
    bucket = Bucket.from_uri(settings.blob_root_uri, settings)
    uploads = bucket.client.list_multipart_uploads(Bucket=bucket.name, Prefix=bucket.prefix)
    assert uploads.get("Uploads", []) == []


def test_a_missing_blob_is_permanent(s3_store: tuple[BlobStore, Settings]) -> None:
    store, _ = s3_store
    with pytest.raises(PermanentError) as caught, store.local_path(store.uri("media/nope/source")):
        pass
    assert caught.value.reason is Reason.SOURCE_UNREACHABLE


def test_a_store_that_does_not_answer_is_transient_and_names_no_secret(
    settings: Settings, s3_credentials: None
) -> None:
    down = s3_settings(
        settings, s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_timeout_seconds=2.0
    )
    store = BlobStore.from_settings(down)
    with pytest.raises(TransientError) as caught:
        store.put_bytes(b"x", "media/job-4/source")
    assert caught.value.reason is Reason.BLOB_STORE_UNAVAILABLE
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)
