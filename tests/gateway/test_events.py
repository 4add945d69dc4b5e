"""Live progress over Server-Sent Events, read the way a browser's EventSource reads it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from sinks.db import Pool, transaction
from sinks.jobs import set_status
from sinks.stage_runs import RunStart, begin
from tests.gateway.conftest import Customer, GatewayFactory


def events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The ``job`` events of an SSE stream, parsed; comments (keep-alives) skipped."""
    name, data = None, None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and name == "job" and data is not None:
            yield json.loads(data)
            name, data = None, None


def test_stream_sends_each_change_and_ends_with_the_job(
    gateway_factory: GatewayFactory,
    customer: Customer,
    other_customer: Customer,
    db_pool: Pool,
) -> None:
    gateway = gateway_factory(gateway_sse_poll_seconds=0.05)
    with gateway.client(customer) as client:
        job_id = client.post("/v1/jobs", json={"source_url": "https://example.com/a.mp4"}).json()[
            "job_id"
        ]
    with gateway.client(other_customer) as client:
        assert client.get(f"/v1/jobs/{job_id}/events").status_code == 404
    seen: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=gateway.url, headers=customer.headers, timeout=10) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for event in events(stream.iter_lines()):
            seen.append(event)
            with transaction(db_pool) as conn:
                if len(seen) == 1:
                    set_status(conn, job_id, "running")
                    start = RunStart(job_id, job_id, customer.customer_id, "t", 0, 0)
                    begin(conn, "ingest", start, honours_cancel=False)
                elif len(seen) == 2:
                    set_status(conn, job_id, "completed")
    assert [e["status"] for e in seen] == ["queued", "running", "completed"]
    assert seen[1]["stages"]["ingest"]["status"] == "running"
    assert seen[2]["progress"] == 1.0
