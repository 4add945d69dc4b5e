"""Live progress over Server-Sent Events, read the way a browser's EventSource reads it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
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


def test_open_streams_share_one_database_read_per_interval(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool
) -> None:
    """Six streams on three jobs all see their job start; the process's one poller read
    the database once per interval for all of them, not once per stream."""
    interval = 0.1
    gateway = gateway_factory(gateway_sse_poll_seconds=interval)
    with gateway.client(customer) as client:
        job_ids = [
            client.post("/v1/jobs", json={"source_url": f"https://example.com/{n}.mp4"}).json()[
                "job_id"
            ]
            for n in range(3)
        ]
    poller = gateway.app.state.event_poller
    with ExitStack() as stack:
        streams = []
        for job_id in job_ids * 2:
            client = stack.enter_context(
                httpx.Client(base_url=gateway.url, headers=customer.headers, timeout=10)
            )
            stream = stack.enter_context(client.stream("GET", f"/v1/jobs/{job_id}/events"))
            streams.append(events(stream.iter_lines()))
        assert [next(s)["status"] for s in streams] == ["queued"] * 6
        rounds, started = poller.rounds, time.monotonic()
        with transaction(db_pool) as conn:
            for job_id in job_ids:
                set_status(conn, job_id, "running")
        assert [next(s)["status"] for s in streams] == ["running"] * 6
        elapsed = time.monotonic() - started
    assert 1 <= poller.rounds - rounds <= elapsed / interval + 2
