"""How fast does the cost aggregator record spend, and how soon is a budget crossing seen?

Run from the repo root against the local stack: ``python -m bench.costs [--events N]``.
Each measurement uses fresh topics, consumer groups and customers:

D. decode only: a plain confluent-kafka consumer reading N pre-produced CostEvents and
   decoding each with the platform Codec, no database; timed from the first message
   to the last - the ceiling of one consumer that does nothing with what it reads;
A. the aggregator: ``vidinsight costs-aggregator`` (Faust over aiokafka) reading the same
   N events and recording them in the ledger and spend tables; timed from the first
   ledger row of the run to the last (polled every 20 ms);
F. Faust's ceiling: a Faust app of the same configuration whose agent takes the same
   batches and does nothing with them, in a subprocess; timed from its first batch to the
   last - how much of the gap between A and D is Faust's own per-event cost;
B. budget latency: with the aggregator idle, one event that takes a customer past its
   monthly budget is produced; timed until ``sinks.budgets.is_over_budget`` answers yes
   (polled every 10 ms), which is the question the gateway asks before accepting a job.

Targets: A >= 0.25 x D, B <= 5 s (F is reported, not targeted). The benchmark always
exits 0; each target is marked PASS or MISS. Its topics stay (names never repeat); its
ledger and spend rows stay too (the customers are bench-only and unique per run).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from schemas.codec import Codec
from sinks.budgets import is_over_budget
from sinks.customers import create_customer
from sinks.db import Connection, connect
from sinks.migrate import migrate
from topics.admin import ensure_topics
from topics.catalogue import TopicSpec
from vidinsight.settings import REPO_ROOT, Settings

PARTITIONS = 2
RATE_RATIO_TARGET = 0.25
BUDGET_SECONDS_TARGET = 5.0


def _topic(settings: Settings, name: str, schema: str) -> str:
    topic = f"bench.{uuid.uuid4().hex[:10]}.{name}"
    spec = TopicSpec(name=topic, partitions=PARTITIONS, replication_factor=1, value_schema=schema)
    ensure_topics(settings.kafka_bootstrap, [spec])
    return topic


def _event(customer: str, job: str, amount: int) -> dict[str, Any]:
    return {
        "event_id": f"bench-{uuid.uuid4()}",
        "customer_id": customer,
        "job_id": job,
        "stage": "analyse",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "unit": "tokens",
        "quantity": 100.0,
        "input_tokens": 80,
        "cached_tokens": 0,
        "output_tokens": 20,
        "amount_usd_micros": amount,
        "occurred_at_ms": int(time.time() * 1000),
    }


def produce_events(
    settings: Settings, codec: Codec, topic: str, events: list[dict[str, Any]]
) -> None:
    """Write the events (keyed by customer, as the stages do) and wait for every ack."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 20}
    )
    for value in events:
        producer.produce(
            topic, key=value["customer_id"], value=codec.encode(topic, "CostEvent", value)
        )
        producer.poll(0)
    assert producer.flush(60) == 0, "events not delivered"


def decode_only_rate(settings: Settings, codec: Codec, topic: str, n: int) -> float:
    """D: events per second of a plain consumer that only decodes."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench.decode.{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    first = 0.0
    try:
        while seen < n:
            for message in consumer.consume(500, 1.0):
                if message.error() is not None:
                    continue
                if seen == 0:
                    first = time.perf_counter()
                codec.decode(topic, message.value())
                seen += 1
        elapsed = time.perf_counter() - first
    finally:
        consumer.close()
    return (n - 1) / elapsed


def start_aggregator(
    settings: Settings, costs_topic: str, budgets_topic: str, log: Path
) -> subprocess.Popen[bytes]:
    """The real ``vidinsight costs-aggregator`` process on the bench topics."""
    env = {
        **os.environ,
        "VI_COSTS_INPUT_TOPIC": costs_topic,
        "VI_COSTS_BUDGET_TOPIC": budgets_topic,
        "VI_COSTS_APP_ID": f"bench.costs.{uuid.uuid4().hex[:8]}",
        "VI_LOG_LEVEL": os.environ.get("VI_LOG_LEVEL", "WARNING"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "costs-aggregator"],
        env=env,
        cwd=REPO_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _ledger_count(conn: Connection, customer: str) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM cost_ledger WHERE customer_id = %s", (customer,)
    ).fetchone()
    return int(row["n"]) if row else 0


def aggregator_rate(
    conn: Connection,
    customer: str,
    n: int,
    aggregator: subprocess.Popen[bytes],
    timeout: float = 300.0,
) -> float:
    """A: events per second from the first ledger row of the run to the last."""
    deadline = time.monotonic() + timeout
    first_count, first = 0, 0.0
    while time.monotonic() < deadline:
        if aggregator.poll() is not None:
            raise RuntimeError(f"the aggregator exited with {aggregator.returncode}; see its log")
        count = _ledger_count(conn, customer)
        if count and not first:
            first_count, first = count, time.perf_counter()
        if count >= n:
            return (n - first_count) / (time.perf_counter() - first)
        time.sleep(0.02)
    raise TimeoutError(f"aggregator recorded {_ledger_count(conn, customer)} of {n} in {timeout} s")


def budget_latency(settings: Settings, codec: Codec, conn: Connection, topic: str) -> float:
    """B: seconds from producing a budget-crossing event to the check answering yes."""
    customer, _ = create_customer(conn, "bench budget", monthly_budget_usd_micros=1_000)
    job = f"bench-job-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    assert not is_over_budget(conn, customer, now)
    start = time.perf_counter()
    produce_events(settings, codec, topic, [_event(customer, job, 1_000)])
    while not is_over_budget(conn, customer, now):
        if time.perf_counter() - start > 60:
            raise TimeoutError("budget crossing not seen in 60 s")
        time.sleep(0.01)
    return time.perf_counter() - start


def faust_ceiling_rate(topic: str, n: int) -> float:
    """F: run ``faust_noop`` in a subprocess (Faust's worker owns its process) and read its rate."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.costs", "--faust-noop", topic, "--events", str(n)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in out.stdout.splitlines():
        if line.startswith("faust-noop-rate "):
            return float(line.split()[1])
    raise RuntimeError(f"faust no-op run printed no rate: {out.stderr[-2000:]}")


def faust_noop(settings: Settings, topic: str, n: int) -> None:
    """The body of F: the aggregator's Faust settings, batches taken and dropped."""
    import faust
    from faust.streams import Stream

    from streams.costs.app import faust_app

    app = faust_app(f"bench.faust-noop.{uuid.uuid4().hex[:8]}", settings)
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    seen = {"events": 0, "first_batch": 0, "start": 0.0}

    @app.agent(source)
    async def drop(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, Stream)
        async for events in stream.take_events(
            settings.costs_batch_max_events, within=settings.costs_batch_max_wait_seconds
        ):
            if not seen["start"]:
                seen["start"], seen["first_batch"] = time.perf_counter(), len(events)
            seen["events"] += len(events)
            if seen["events"] >= n:
                rate = (n - seen["first_batch"]) / (time.perf_counter() - seen["start"])
                print(f"faust-noop-rate {rate:.0f}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--faust-noop", metavar="TOPIC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = Settings()
    if args.faust_noop:
        faust_noop(settings, args.faust_noop, args.events)
        return 0
    codec = Codec(settings.registry_url)
    costs_topic = _topic(settings, "costs", "CostEvent")
    budgets_topic = _topic(settings, "budgets", "BudgetEvent")
    customer = f"bench-{uuid.uuid4().hex[:8]}"
    events = [_event(customer, f"bench-job-{i % 50}", 1 + i % 997) for i in range(args.events)]
    produce_events(settings, codec, costs_topic, events)
    decode_rate = decode_only_rate(settings, codec, costs_topic, args.events)
    faust_rate = faust_ceiling_rate(costs_topic, args.events)
    log = Path(f"/tmp/bench-costs-{uuid.uuid4().hex[:6]}.log")
    with connect(settings) as conn:
        migrate(conn)
        aggregator = start_aggregator(settings, costs_topic, budgets_topic, log)
        try:
            rate = aggregator_rate(conn, customer, args.events, aggregator)
            latency = budget_latency(settings, codec, conn, costs_topic)
        finally:
            aggregator.terminate()
            aggregator.wait(60)
    ratio = rate / decode_rate
    print(f"events: {args.events} on {PARTITIONS} partitions (aggregator log: {log})")
    print(f"D decode only (confluent-kafka + Codec): {decode_rate:10.0f} events/s")
    print(f"A cost aggregator (Faust, ledger + spend): {rate:8.0f} events/s")
    print(f"F Faust alone (same batches, no work):   {faust_rate:8.0f} events/s")
    print(f"F/D = {faust_rate / decode_rate:.2f}, A/F = {rate / faust_rate:.2f}")
    print(
        f"A/D = {ratio:.2f} (target >= {RATE_RATIO_TARGET}) {_verdict(ratio >= RATE_RATIO_TARGET)}"
    )
    print(
        f"B budget crossing -> is_over_budget yes: {latency * 1000:.0f} ms"
        f" (target <= {BUDGET_SECONDS_TARGET:.0f} s) {_verdict(latency <= BUDGET_SECONDS_TARGET)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
