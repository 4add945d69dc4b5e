"""PostHog events arrive at a local stand-in for PostHog's capture API, in its batch format."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.gateway.conftest import Customer, GatewayFactory


class CaptureEndpoint:
    """Answers ``POST /batch/`` as PostHog does and keeps every batch it receives."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        batches = self.batches

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.rstrip("/") == "/batch":
                    batches.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": 1}')

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch["batch"]]

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def capture() -> Iterator[CaptureEndpoint]:
    endpoint = CaptureEndpoint()
    yield endpoint
    endpoint.close()


def test_job_submitted_events_reach_posthog_without_personal_data(
    gateway_factory: GatewayFactory, customer: Customer, capture: CaptureEndpoint
) -> None:
    gateway = gateway_factory(posthog_api_key="phc_test_project", posthog_host=capture.url)
    secret_url = "https://private.example.com/board-meeting.mp4"
    with gateway.client(customer) as client:
        job_ids = [
            client.post("/v1/jobs", json={"source_url": secret_url}).json()["job_id"]
            for _ in range(2)
        ]
    deadline = time.monotonic() + 15
    while len(capture.events()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    events = capture.events()
    assert len(events) == 2
    assert all(batch["api_key"] == "phc_test_project" for batch in capture.batches)
    assert [e["event"] for e in events] == ["job submitted", "job submitted"]
    assert {e["distinct_id"] for e in events} == {customer.customer_id}
    assert [e["properties"]["job_id"] for e in events] == job_ids
    assert events[0]["properties"]["source"] == "url"
    assert "board-meeting" not in json.dumps(capture.batches)
