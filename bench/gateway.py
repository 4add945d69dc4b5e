"""How fast does the gateway accept jobs, next to a FastAPI route that does nothing?

Run from the repo root against the local stack: ``python -m bench.gateway``. Both
servers run as their own uvicorn processes on 127.0.0.1 and are driven by the same
asyncio + httpx load generator in this process, in the same run:

bare     ``POST /v1/jobs`` on a FastAPI app whose route returns a constant (the ceiling
         of FastAPI + uvicorn + this load generator on this machine);
gateway  ``POST /v1/jobs`` on the real gateway: API-key lookup, quota, the outbox insert,
         the idempotent produce to Kafka with its ack, mark published.

Submissions come from ``--customers`` customers in turn (a burst at the door comes from
many tenants; one customer's submissions serialise on its quota check by design).
Two measurements for each: a burst (N requests, C in flight, as fast as they are
answered) gives accepted submissions per second and p50/p99 latency; then the gateway
is paced at half the bare burst rate, the bare route too for the floor this load
generator and machine give (open loop, each latency counted from the request's
scheduled start, so a server that falls behind shows it).

Targets: gateway burst rate >= 0.5 x bare burst rate, and gateway p99 <= 50 ms when
paced at that rate. The benchmark always exits 0; each target is marked PASS or MISS.
Its jobs go to a topic of its own and its rows are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI

from sinks.customers import create_customer
from sinks.db import connect
from topics.admin import ensure_topics
from topics.catalogue import TopicSpec
from vidinsight.settings import REPO_ROOT, Settings, get_settings

BODY = {"source_url": "https://example.com/bench.mp4"}


@dataclass
class Run:
    """The outcome of one load run."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        return 1000 * ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def bare_app() -> FastAPI:
    """A FastAPI app whose submission route does nothing at all."""
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit() -> dict[str, str]:
        return {"job_id": "job_bare", "status": "queued"}

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """A server subprocess, returned once it answers on ``port``."""
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server {args} exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server {args} did not start")


async def submit(client: httpx.AsyncClient, api_key: str) -> int:
    """One submission's HTTP status; 0 when the connection failed (counted, not accepted)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        answer = await client.post("/v1/jobs", json=BODY, headers=headers, timeout=30)
    except httpx.HTTPError:
        return 0
    return answer.status_code


async def burst(url: str, keys: list[str], n: int, concurrency: int) -> Run:
    """N submissions with ``concurrency`` in flight, each sent when a slot frees up."""
    run = Run()
    todo = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:

        async def worker() -> None:
            for i in todo:
                started = time.perf_counter()
                status = await submit(client, keys[i % len(keys)])
                run.latencies.append(time.perf_counter() - started)
                run.statuses[status] = run.statuses.get(status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - began
    return run


async def paced(url: str, keys: list[str], rate: float, seconds: float) -> Run:
    """Submissions at a steady ``rate`` (open loop); latency from each scheduled start.

    A first second at the same rate is not counted: it opens the client's connections,
    whose set-up would otherwise land in whichever server is measured first.
    """
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        await _paced_series(client, keys, rate, 1.0)
        return await _paced_series(client, keys, rate, seconds)


async def _paced_series(
    client: httpx.AsyncClient, keys: list[str], rate: float, seconds: float
) -> Run:
    run = Run()
    total = max(1, int(rate * seconds))

    async def one(scheduled: float, api_key: str) -> None:
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        status = await submit(client, api_key)
        run.latencies.append(time.perf_counter() - scheduled)
        run.statuses[status] = run.statuses.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(one(began + i / rate, keys[i % len(keys)]) for i in range(total)))
    run.seconds = time.perf_counter() - began
    return run


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(
    bare: Run, gateway: Run, floor: Run, steady: Run, rate: float, n: int, concurrency: int
) -> None:
    print()
    print(f"vidinsight gateway benchmark  (burst N = {n}, {concurrency} in flight)")
    print("-" * 78)
    print(f"{'':32}{'accepted/s':>12}{'p50 ms':>10}{'p99 ms':>10}   statuses")
    for name, run in (
        ("bare FastAPI route (burst)", bare),
        ("gateway POST /v1/jobs (burst)", gateway),
    ):
        print(
            f"{name:32}{run.per_second:12.0f}{run.percentile_ms(50):10.1f}"
            f"{run.percentile_ms(99):10.1f}   {run.statuses}"
        )
    for name, run in (
        (f"bare paced at {rate:.0f}/s", floor),
        (f"gateway paced at {rate:.0f}/s", steady),
    ):
        print(
            f"{name:32}{run.per_second:12.0f}"
            f"{run.percentile_ms(50):10.1f}{run.percentile_ms(99):10.1f}   {run.statuses}"
        )
    ratio = gateway.per_second / bare.per_second if bare.per_second else 0.0
    print("-" * 78)
    print(f"gateway / bare burst rate: {ratio:.2f}  (target >= 0.50)  {verdict(ratio >= 0.5)}")
    p99 = steady.percentile_ms(99)
    paced_line = f"gateway p99 paced at half the bare rate: {p99:.1f} ms  (target <= 50)"
    print(f"{paced_line}  {verdict(p99 <= 50)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per burst")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument(
        "--customers", type=int, default=64, help="submitting customers, round robin"
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning")
        return 0
    settings = get_settings()
    customers = _bench_customers(settings, args.customers)
    keys = [api_key for _, api_key in customers]
    topic = f"bench.{uuid.uuid4().hex[:12]}.jobs.requested"
    ensure_topics(
        settings.kafka_bootstrap,
        [TopicSpec(name=topic, partitions=6, replication_factor=1, value_schema="JobRequested")],
    )
    bare_port, gateway_port = free_port(), free_port()
    env = {
        "VI_GATEWAY_JOBS_TOPIC": topic,
        "VI_GATEWAY_MAX_JOBS_IN_FLIGHT": str(10**9),
        "VI_GATEWAY_RELAY_INTERVAL_SECONDS": "0",
        "VI_LOG_LEVEL": "WARNING",
    }
    servers = [
        start_server(["-m", "bench.gateway", "--serve-bare", str(bare_port)], {}, bare_port),
        start_server(["-m", "cli.main", "gateway", "--port", str(gateway_port)], env, gateway_port),
    ]
    try:
        bare_url, gateway_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{gateway_port}"
        asyncio.run(burst(bare_url, keys, 200, args.concurrency))  # warm-up
        asyncio.run(burst(gateway_url, keys, 200, args.concurrency))
        bare = asyncio.run(burst(bare_url, keys, args.n, args.concurrency))
        gateway = asyncio.run(burst(gateway_url, keys, args.n, args.concurrency))
        rate = bare.per_second / 2
        floor = asyncio.run(paced(bare_url, keys, rate, args.paced_seconds))
        steady = asyncio.run(paced(gateway_url, keys, rate, args.paced_seconds))
        report(bare, gateway, floor, steady, rate, args.n, args.concurrency)
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
        _cleanup(settings, [customer_id for customer_id, _ in customers])
    return 0


def _bench_customers(settings: Settings, count: int) -> list[tuple[str, str]]:
    """``count`` customers: (customer_id, api_key) each."""
    with connect(settings) as conn, conn.transaction():
        return [create_customer(conn, f"bench-{uuid.uuid4().hex[:8]}") for _ in range(count)]


def _cleanup(settings: Settings, customer_ids: list[str]) -> None:
    with connect(settings) as conn, conn.transaction():
        conn.execute("DELETE FROM jobs WHERE customer_id = ANY(%s)", (customer_ids,))


if __name__ == "__main__":
    sys.exit(main())
