"""Uploads: the body streamed to a blob, its size and digest, the size cap."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from sinks.db import Pool, transaction
from sinks.uploads import get_upload
from tests.gateway.conftest import Customer, GatewayFactory, RunningGateway

MEDIA = {"Content-Type": "video/mp4"}


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    """A body sent in pieces (chunked transfer), like a client streaming a large file."""
    sent = 0
    while sent < total:
        piece = os.urandom(min(size, total - sent))
        sent += len(piece)
        yield piece


def test_upload_is_stored_whole_with_its_digest(
    gateway: RunningGateway, customer: Customer, db_pool: Pool
) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    with gateway.client(customer) as client:
        answer = client.post("/v1/uploads", content=body, headers=MEDIA)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["bytes"] == len(body)
    assert created["sha256"] == hashlib.sha256(body).hexdigest()
    with transaction(db_pool) as conn:
        upload = get_upload(conn, created["upload_id"], customer.customer_id)
    assert upload is not None
    assert upload["blob_uri"].startswith("file://")
    assert Path(urlparse(upload["blob_uri"]).path).read_bytes() == body


def test_chunked_upload_without_length(gateway: RunningGateway, customer: Customer) -> None:
    with gateway.client(customer) as client:
        answer = client.post("/v1/uploads", content=chunks(2 * 1024 * 1024), headers=MEDIA)
    assert answer.status_code == 201, answer.text
    assert answer.json()["bytes"] == 2 * 1024 * 1024


def test_upload_over_the_cap_is_413_and_leaves_no_blob(
    gateway_factory: GatewayFactory, customer: Customer
) -> None:
    gateway = gateway_factory(gateway_max_upload_bytes=1024 * 1024)
    uploads = gateway.settings.state_dir / "blobs" / "uploads" / customer.customer_id
    with gateway.client(customer) as client:
        declared = client.post("/v1/uploads", content=os.urandom(1024 * 1024 + 1), headers=MEDIA)
        streamed = client.post("/v1/uploads", content=chunks(3 * 1024 * 1024), headers=MEDIA)
        at_cap = client.post("/v1/uploads", content=os.urandom(1024 * 1024), headers=MEDIA)
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["reason"] == "too_large"
    assert at_cap.status_code == 201
    assert sorted(p.name for p in uploads.iterdir()) == [at_cap.json()["upload_id"]]


def test_upload_needs_a_media_type_and_a_body(gateway: RunningGateway, customer: Customer) -> None:
    with gateway.client(customer) as client:
        text = client.post("/v1/uploads", content=b"hello", headers={"Content-Type": "text/plain"})
        empty = client.post("/v1/uploads", content=b"", headers=MEDIA)
        anonymous = client.post("/v1/uploads", content=b"x", headers={**MEDIA, "Authorization": ""})
    assert text.status_code == 415
    assert empty.status_code == 422
    assert empty.json()["error"]["reason"] == "empty_media"
    assert anonymous.status_code == 401


def test_multipart_file_field_is_stored(
    gateway: RunningGateway, customer: Customer, db_pool: Pool
) -> None:
    body = os.urandom(1024 * 1024 + 5)
    with gateway.client(customer) as client:
        answer = client.post(
            "/v1/uploads",
            data={"title": "ignored"},
            files={"file": ("talk.mp4", body, "video/mp4")},
        )
        missing = client.post("/v1/uploads", files={"other": ("x.mp4", b"abc", "video/mp4")})
        garbled = client.post(
            "/v1/uploads",
            content=b"--nope\r\nnot multipart at all",
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["bytes"] == len(body)
    assert answer.json()["sha256"] == hashlib.sha256(body).hexdigest()
    with transaction(db_pool) as conn:
        upload = get_upload(conn, answer.json()["upload_id"], customer.customer_id)
    assert upload is not None
    assert Path(urlparse(upload["blob_uri"]).path).read_bytes() == body
    for refused in (missing, garbled):
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["reason"] == "invalid_request"


def test_multipart_file_over_the_cap_is_413(
    gateway_factory: GatewayFactory, customer: Customer
) -> None:
    gateway = gateway_factory(gateway_max_upload_bytes=1024 * 1024)
    with gateway.client(customer) as client:
        answer = client.post(
            "/v1/uploads", files={"file": ("big.mp4", os.urandom(1024 * 1024 + 1), "video/mp4")}
        )
    assert answer.status_code == 413
