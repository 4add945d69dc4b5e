"""Webhooks: signed over timestamp and body, retried with backoff, every attempt recorded,
and never sent to an address the SSRF guard refuses."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from media.fetch import parse_networks
from sinks.db import Pool, transaction
from sinks.deliveries import job_deliveries
from sinks.webhooks import SIGNATURE_HEADER, WebhookPolicy, deliver, job_event

SECRET = "whsec_test"


class Receiver:
    """A customer's endpoint on localhost that fails the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls.append((dict(self.headers.items()), body))
                self.send_response(500 if len(calls) <= failures else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver(failures=2)
    yield endpoint
    endpoint.close()


def policy(allowed: str = "") -> WebhookPolicy:
    return WebhookPolicy(
        secret=SECRET,
        max_attempts=4,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=1.0,
        timeout_seconds=5,
        allowed_networks=parse_networks(allowed),
    )


def verify(headers: dict[str, str], body: bytes, tolerance_seconds: int = 300) -> bool:
    """What a receiver does: recompute the HMAC over "<t>." + body, check the timestamp."""
    fields = dict(part.split("=", 1) for part in headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - int(fields["t"])) <= tolerance_seconds
    return fresh and hmac.compare_digest(expected.hexdigest(), fields["v1"])


def test_webhook_is_signed_retried_with_backoff_and_recorded(
    receiver: Receiver, db_pool: Pool
) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    url = f"http://127.0.0.1:{receiver.port}/hooks/vidinsight"
    event = job_event({"job_id": job_id, "status": "failed", "error_reason": "corrupt_media"})
    pauses: list[float] = []
    assert deliver(db_pool, job_id, url, event, policy("127.0.0.0/8"), sleep=pauses.append)
    assert pauses == [0.05, 0.1]  # exponential backoff between the three attempts
    assert len(receiver.calls) == 3
    headers, body = receiver.calls[-1]
    assert verify(headers, body)
    assert not verify(headers, body.replace(b"failed", b"completed"))  # tampering shows
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert json.loads(body) == {
        "type": "job.failed",
        "job_id": job_id,
        "status": "failed",
        "error": {"reason": "corrupt_media", "message": "", "stage": None},
    }
    with transaction(db_pool) as conn:
        attempts = job_deliveries(conn, job_id)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 500), (3, 204)]


@pytest.mark.parametrize(
    "host",
    ["localhost", "127.0.0.1", "10.0.0.7", "192.168.1.1", "169.254.169.254", "[::1]"],
)
def test_inward_addresses_are_refused_after_resolution(
    receiver: Receiver, db_pool: Pool, host: str
) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    url = f"http://{host}:{receiver.port}/steal"
    event = job_event({"job_id": job_id, "status": "completed"})
    assert not deliver(db_pool, job_id, url, event, policy(), sleep=lambda _s: None)
    assert receiver.calls == []
    with transaction(db_pool) as conn:
        attempts = job_deliveries(conn, job_id)
    assert len(attempts) == 1  # refused once, never retried
    assert attempts[0]["status_code"] is None
    assert attempts[0]["error"].startswith("source_forbidden")
