"""Blobs as objects in one S3 bucket (AWS or any S3-compatible store), behind sinks.blobs.

A write streams as a multipart upload holding one part in memory (``s3_part_bytes``);
a write that fails is aborted, so a half-written object never appears and no parts are
left behind to be billed. A small write is one PUT. Reads download into a local file
with boto3's ranged transfers. boto3 directly, not s3fs: s3fs pins aiobotocore to a
botocore range no litellm release in the lock accepts (decision 0015).

Credentials come from boto3's chain (the environment, or the pod's identity) and never
pass through the settings or a message. A missing object is permanent
(source_unreachable); every other failure, the network's or the store's, is transient
(blob_store_unavailable): the message waits and is retried.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vidinsight.errors import PermanentError, Reason, TransientError
from vidinsight.settings import Settings

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def s3_client(settings: Settings) -> Any:
    """An S3 client as configured; thread-safe, so one serves every handler thread."""
    config = Config(
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=settings.s3_timeout_seconds,
        read_timeout=settings.s3_timeout_seconds,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
        config=config,
    )


def platform_error(error: Exception, what: str) -> PermanentError | TransientError:
    """The platform's error for a failed S3 call about ``what``."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING_CODES or status == 404:
            return PermanentError(Reason.SOURCE_UNREACHABLE, f"{what} does not exist")
        return TransientError(Reason.BLOB_STORE_UNAVAILABLE, f"{what}: the store answered {code}")
    return TransientError(Reason.BLOB_STORE_UNAVAILABLE, f"{what}: {type(error).__name__}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise boto's failures inside as the platform's errors."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise platform_error(error, what) from error


class MultipartWriter(io.RawIOBase):
    """A writable stream to one object: parts of ``part_bytes`` go as they fill."""

    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= self._part_bytes:
            self._send_part(bytes(self._buffer[: self._part_bytes]))
            del self._buffer[: self._part_bytes]
        return len(view)

    def finish(self) -> None:
        """Make the object appear: one PUT if it never filled a part, else the last part
        and the upload's completion."""
        with translated(f"writing blob {self._key}"):
            if self._upload_id is None:
                body = bytes(self._buffer)
                self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body)
                return
            if self._buffer:
                self._send_part(bytes(self._buffer))
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    def abort(self) -> None:
        """Drop what was sent: the parts of an unfinished upload are deleted."""
        if self._upload_id is not None:
            with translated(f"aborting the upload of blob {self._key}"):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )

    def _send_part(self, part: bytes) -> None:
        with translated(f"writing blob {self._key}"):
            if self._upload_id is None:
                started = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            sent = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            )
        # Number and ETag only: an echoed part checksum must match one the upload was
        # created to use, which some S3-compatible stores refuse otherwise.
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})


@dataclass(frozen=True)
class Bucket:
    """The blob store's objects: ``prefix``/key in one bucket."""

    client: Any
    name: str
    prefix: str
    part_bytes: int

    @classmethod
    def from_uri(cls, root_uri: str, settings: Settings) -> Bucket:
        """The bucket and prefix of ``s3://bucket/prefix``."""
        name, _, prefix = root_uri.removeprefix("s3://").partition("/")
        return cls(s3_client(settings), name, prefix.strip("/"), settings.s3_part_bytes)

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def open_write(self, key: str) -> Iterator[MultipartWriter]:
        """Write the object ``key``; it appears only once the block ends without error."""
        writer = MultipartWriter(self.client, self.name, self.object_key(key), self.part_bytes)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish()

    def size(self, key: str) -> int:
        with translated(f"blob {key}"):
            head = self.client.head_object(Bucket=self.name, Key=self.object_key(key))
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        """Delete ``key``; one already gone is fine (S3 answers a delete of it alike)."""
        with translated(f"deleting blob {key}"):
            self.client.delete_object(Bucket=self.name, Key=self.object_key(key))

    def download(self, key: str, target: Path) -> None:
        """The object's bytes into ``target`` (ranged GETs, a bounded buffer each)."""
        with translated(f"blob {key}"):
            self.client.download_file(self.name, self.object_key(key), str(target))
