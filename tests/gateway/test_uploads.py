"""Uploads: the body streamed to a blob, its size and digest, the size cap, the listing,
and the quota an abandoned upload gives back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from gateway.app import create_app
from sinks.db import Pool, transaction
from sinks.uploads import UploadUsage, get_upload, upload_usage
from tests.gateway.conftest import (
    Customer,
    FirebaseKeys,
    GatewayFactory,
    RunningGateway,
    gateway_settings,
)
from vidinsight.settings import Settings

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


def test_listing_shows_own_uploads_with_expiry_and_quota(
    gateway: RunningGateway, customer: Customer, other_customer: Customer
) -> None:
    body = os.urandom(70_000)
    with gateway.client(customer) as client:
        created = client.post("/v1/uploads", content=body, headers=MEDIA).json()
        listed = client.get("/v1/uploads")
    with gateway.client(other_customer) as client:
        theirs = client.get("/v1/uploads")
    assert listed.status_code == 200, listed.text
    [view] = listed.json()["uploads"]
    assert view["upload_id"] == created["upload_id"]
    assert (view["bytes"], view["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    stored = datetime.fromisoformat(view["created_at"])
    expires = datetime.fromisoformat(view["expires_at"])
    assert expires - stored == timedelta(hours=gateway.settings.upload_ttl_hours)
    assert listed.json()["quota"] == {
        "max_count": gateway.settings.upload_max_count_per_customer,
        "max_bytes": gateway.settings.upload_max_bytes_per_customer,
        "count": 1,
        "bytes": len(body),
    }
    assert theirs.json()["uploads"] == []


def test_an_upload_the_client_abandons_gives_its_quota_back(
    gateway: RunningGateway, customer: Customer, db_pool: Pool
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.settings.gateway_port), timeout=10) as s:
        s.sendall(
            b"POST /v1/uploads HTTP/1.1\r\nHost: gateway\r\nContent-Type: video/mp4\r\n"
            + f"Authorization: Bearer {customer.api_key}\r\n".encode()
            + b"Content-Length: 4194304\r\n\r\n"
            + os.urandom(300_000)
        )
        deadline = time.monotonic() + 10
        while _usage(db_pool, customer).count == 0:  # the reservation is taken
            assert time.monotonic() < deadline, "the upload never reserved its quota"
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while _usage(db_pool, customer) != UploadUsage(count=0, bytes=0):
        assert time.monotonic() < deadline, "the abandoned upload still holds quota"
        time.sleep(0.05)
    folder = gateway.settings.state_dir / "blobs" / "uploads" / customer.customer_id
    assert not folder.exists() or list(folder.iterdir()) == []


def _usage(pool: Pool, customer: Customer) -> UploadUsage:
    with transaction(pool) as conn:
        return upload_usage(conn, customer.customer_id)


def test_a_gateway_that_fails_to_start_leaves_nothing_running(
    settings: Settings, firebase_keys: FirebaseKeys
) -> None:
    """The metrics port is taken: start-up fails after the relay and the upload sweeper
    started, and stops them (no thread of theirs keeps running in the process)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = create_app(
            gateway_settings(
                settings,
                firebase_keys,
                metrics_port=taken.getsockname()[1],
                gateway_relay_interval_seconds=1,
                upload_sweep_interval_seconds=60,
            )
        )
        before = set(threading.enumerate())

        async def start() -> None:
            async with app.router.lifespan_context(app):
                pass

        with pytest.raises(OSError):
            asyncio.run(start())
    names = {"upload-sweeper", "producer-poll", "outbox-marker"}
    deadline = time.monotonic() + 10
    while leftover := [
        t.name for t in set(threading.enumerate()) - before if t.name in names and t.is_alive()
    ]:
        assert time.monotonic() < deadline, f"still running after a failed start: {leftover}"
        time.sleep(0.05)
