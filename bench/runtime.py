"""How fast is the stage runtime, and what does it add to a message's latency?

Run from the repo root against the local stack: ``python -m bench.runtime``. Four
measurements, each on its own fresh topics and consumer groups:

A. raw consume: a plain confluent-kafka consumer (the runtime's consumer config) reading
   N pre-produced messages, no decoding, no database; timed from its partition
   assignment to the last message - the ceiling of one consumer on this machine;
B. the floor: one upsert plus one commit per message with psycopg, no Kafka - what
   a naive consume-store-commit loop would do at best;
R. the runtime: a trivial stage (one JobCompleted output, no cost events, the same
   upsert as B) run in-process by ``build_worker``; timed from its partition assignment
   until the group's committed offsets (polled every 0.1 s) cover all N messages;
L. latency per hop at low load: messages produced one at a time at a steady rate, each
   measured as output CreateTime minus input CreateTime, through the runtime and through
   a raw consume-and-re-produce pipe, so the runtime's added latency is the difference.

Targets: R >= 0.5 x B, and p99 added latency <= 20 ms. The benchmark always exits 0;
each target is marked PASS or MISS. Its topics stay (names never repeat); its rows in
bench_results, stage_runs and audit_log are deleted at the end.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from schemas.codec import Codec
from sinks.db import Connection, connect
from sinks.migrate import migrate
from streams.runtime.clients import consumer_config, producer_config
from streams.runtime.context import HandlerContext
from streams.runtime.runner import build_worker
from streams.runtime.stage import Inbound, Output, Stage, StageResult
from streams.runtime.worker import StageWorker
from telemetry import logs
from topics.admin import ensure_topics, offsets_reader
from topics.catalogue import TopicSpec
from vidinsight.settings import Settings

PARTITIONS = 6
RATIO_TARGET = 0.5  # runtime rate / floor rate
ADDED_P99_TARGET_MS = 20.0
FLOOR_BUDGET_SECONDS = 15.0  # baseline B stops early past this, so defaults stay short
WARMUP_MESSAGES = 5

DDL = (
    "CREATE TABLE IF NOT EXISTS bench_results ("
    " job_id text PRIMARY KEY, customer_id text, source_uri text)"
)
UPSERT = (
    "INSERT INTO bench_results (job_id, customer_id, source_uri) VALUES (%s, %s, %s)"
    " ON CONFLICT (job_id) DO UPDATE"
    " SET customer_id = EXCLUDED.customer_id, source_uri = EXCLUDED.source_uri"
)


# -- shared pieces ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """``count`` messages handled in ``seconds`` (steady state), and the wall time overall."""

    count: int
    seconds: float
    wall_seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class Latency:
    """Per-message hop latencies in milliseconds."""

    samples_ms: list[float]
    lost: int

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile; NaN without samples."""
        if not self.samples_ms:
            return math.nan
        ordered = sorted(self.samples_ms)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]


def job_value(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "customer_id": "cust-bench",
        "source_uri": f"file:///tmp/{job_id}.mp4",
        "webhook_url": None,
        "options": {},
        "requested_at_ms": int(time.time() * 1000),
    }


def make_topics(settings: Settings, specs: Sequence[tuple[str, int, str]]) -> None:
    ensure_topics(
        settings.kafka_bootstrap,
        [
            TopicSpec(name=name, partitions=partitions, replication_factor=1, value_schema=schema)
            for name, partitions, schema in specs
        ],
    )


def produce_jobs(settings: Settings, codec: Codec, topic: str, job_ids: Sequence[str]) -> None:
    """Write one JobRequested per id (keyed by it), batched, and wait for every ack."""
    producer = Producer({**producer_config(settings), "linger.ms": 20, "client.id": "bench-load"})
    for job_id in job_ids:
        body = codec.encode(topic, "JobRequested", job_value(job_id))
        while True:
            try:
                producer.produce(topic, value=body, key=job_id)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} message(s) to {topic} not delivered")


def committed_total(reader: Consumer, topic: str) -> int:
    """The sum of the reader's group's committed offsets over the topic (0 if none)."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum(max(0, tp.offset) for tp in reader.committed(partitions, timeout=5))


# -- baseline A: raw consume -------------------------------------------------------------


def raw_consume(settings: Settings, topic: str, n: int, timeout: float = 60.0) -> Rate:
    """A plain consumer with the runtime's consumer config reading ``n`` messages."""
    consumer = Consumer(consumer_config(settings, f"bench.raw.{uuid.uuid4().hex[:8]}"))
    assigned: list[float] = []

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and not assigned:
            assigned.append(time.monotonic())
        c.incremental_assign(partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    started = time.monotonic()
    seen = 0
    try:
        while seen < n and time.monotonic() - started < timeout:
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    seen += 1
        ended = time.monotonic()
    finally:
        consumer.close()
    return Rate(seen, ended - (assigned[0] if assigned else started), ended - started)


# -- baseline B: the floor ---------------------------------------------------------------


def upsert_loop(settings: Settings, prefix: str, n: int, budget: float) -> Rate:
    """One upsert and one commit per message, as a naive consumer would; no Kafka."""
    with psycopg.connect(settings.database_url) as conn:
        started = time.monotonic()
        done = 0
        for i in range(n):
            job_id = f"{prefix}-{i}"
            conn.execute(UPSERT, (job_id, "cust-bench", f"file:///tmp/{job_id}.mp4"))
            conn.commit()
            done += 1
            if i % 128 == 0 and time.monotonic() - started > budget:
                break
        elapsed = time.monotonic() - started
    return Rate(done, elapsed, elapsed)


# -- the runtime ---------------------------------------------------------------------------


@dataclass
class BenchStage:
    """A trivial stage: one JobCompleted per input, one upsert, no cost events."""

    name: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group: str

    def handle(self, inbound: Inbound, _ctx: HandlerContext) -> StageResult:
        return StageResult(
            outputs=[
                Output(
                    topic=self.output_topic,
                    schema="JobCompleted",
                    key=inbound.job_id,
                    value={
                        "job_id": inbound.job_id,
                        "customer_id": inbound.customer_id,
                        "status": "completed",
                        "reason": None,
                        "insights_uri": None,
                        "completed_at_ms": inbound.timestamp_ms,
                    },
                )
            ],
            payload=inbound.value["source_uri"],
        )

    @staticmethod
    def store(conn: Connection, inbound: Inbound, result: StageResult) -> None:
        conn.execute(UPSERT, (inbound.job_id, inbound.customer_id, result.payload))

    def stage(self) -> Stage:
        return Stage(
            name=self.name,
            input_topic=self.input_topic,
            input_schema="JobRequested",
            handler=self.handle,
            store=self.store,
            dlq_topic=self.dlq_topic,
            group_id=self.group,
            costs_topic=f"{self.input_topic}.costs",  # unused: the stage emits no costs
        )


@dataclass
class RunningWorker:
    """A runtime worker in a background thread of this process."""

    worker: StageWorker
    thread: threading.Thread
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, stage: Stage, settings: Settings) -> RunningWorker:
        worker = build_worker(stage, settings)
        thread = threading.Thread(target=worker.run, name=f"bench-{stage.name}", daemon=True)
        running = cls(worker, thread)
        thread.start()
        return running

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)
        self.worker.processor.pool.close()


def runtime_rate(settings: Settings, bench: BenchStage, n: int, timeout: float = 150.0) -> Rate:
    """Run the stage over ``n`` pre-produced messages until the group has committed them all."""
    reader = offsets_reader(settings.kafka_bootstrap, bench.group, "bench-runtime-offsets")
    running = RunningWorker.start(bench.stage(), settings)
    done = 0
    assigned: float | None = None
    try:
        deadline = running.started + timeout
        while assigned is None and time.monotonic() < deadline:
            if running.worker.partitions:  # the runtime's own view of its assignment
                assigned = time.monotonic()
            time.sleep(0.002)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                done = committed_total(reader, bench.input_topic)
            except KafkaException:
                continue
            if done >= n:
                break
        ended = time.monotonic()
    finally:
        running.stop()
        reader.close()
    return Rate(done, ended - (assigned or running.started), ended - running.started)


# -- latency -------------------------------------------------------------------------------


class OutputWatcher:
    """Collects the CreateTime of every message on a topic, by key, in a background thread."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"bench.watch.{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.subscribe([topic])
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            key = message.key()
            if key is not None:
                self.seen[bytes(key).decode()] = message.timestamp()[1]

    def wait_for(self, keys: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(k in self.seen for k in keys):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def paced_latency(
    settings: Settings,
    codec: Codec,
    in_topic: str,
    out_topic: str,
    prefix: str,
    m: int,
    rate: float,
) -> Latency:
    """Produce ``m`` messages one at a time at ``rate``/s; output CreateTime - input CreateTime."""
    watcher = OutputWatcher(settings, out_topic)
    producer = Producer({**producer_config(settings), "linger.ms": 0, "client.id": "bench-paced"})
    created: dict[str, int] = {}

    def on_delivery(err: KafkaError | None, message: Message) -> None:
        key = message.key()
        if err is None and key is not None:
            created[bytes(key).decode()] = message.timestamp()[1]

    def send(job_id: str) -> None:
        body = codec.encode(in_topic, "JobRequested", job_value(job_id))
        producer.produce(in_topic, value=body, key=job_id, on_delivery=on_delivery)
        producer.poll(0)

    try:
        # Warm-up: the consumer has joined and every cache is filled once these come out.
        warm = [f"{prefix}-warm-{i}" for i in range(WARMUP_MESSAGES)]
        for job_id in warm:
            send(job_id)
        producer.flush(10)
        if not watcher.wait_for(warm, 60):
            raise RuntimeError(f"warm-up messages never reached {out_topic}")
        keys = [f"{prefix}-{i}" for i in range(m)]
        next_at = time.monotonic()
        for job_id in keys:
            send(job_id)
            next_at += 1.0 / rate
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        producer.flush(10)
        watcher.wait_for(keys, 30)
    finally:
        watcher.close()
    samples = [
        float(watcher.seen[k] - created[k]) for k in keys if k in watcher.seen and k in created
    ]
    return Latency(samples, m - len(samples))


def pipe(settings: Settings, in_topic: str, out_topic: str, stop: threading.Event) -> None:
    """The raw hop: consume each message and re-produce it at once; no decoding, no database."""
    consumer = Consumer(consumer_config(settings, f"bench.pipe.{uuid.uuid4().hex[:8]}"))
    producer = Producer(producer_config(settings))
    consumer.subscribe([in_topic])
    try:
        while not stop.is_set():
            message = consumer.poll(0.1)
            producer.poll(0)
            if message is None or message.error() is not None:
                continue
            producer.produce(out_topic, value=message.value(), key=message.key())
    finally:
        producer.flush(10)
        consumer.close()


def with_pipe(settings: Settings, in_topic: str, out_topic: str) -> Callable[[], None]:
    """Start the raw pipe in a thread; return the function that stops it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=pipe, args=(settings, in_topic, out_topic, stop), name="bench-pipe", daemon=True
    )
    thread.start()

    def stopper() -> None:
        stop.set()
        thread.join(30)

    return stopper


# -- the report ----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(
    n: int, a: Rate, b: Rate, r: Rate, runtime_lat: Latency, pipe_lat: Latency, rate: float
) -> None:
    ratio_b = r.per_second / b.per_second
    ratio_a = r.per_second / a.per_second
    print()
    print(f"vidinsight stage runtime benchmark  (N = {n}, {PARTITIONS} partitions)")
    print("-" * 78)
    print(f"{'measurement':<44}{'msgs':>8}{'seconds':>10}{'msgs/s':>12}")
    rows = [
        ("A  raw confluent-kafka consume", a),
        ("B  upsert + commit per message (floor)", b),
        ("R  runtime, trivial stage (1 output, 0 costs)", r),
    ]
    for label, row in rows:
        print(f"{label:<44}{row.count:>8}{row.seconds:>10.2f}{row.per_second:>12.0f}")
    print(
        f"   (wall time incl. start-up and group join: {r.wall_seconds:.2f} s;"
        f" A: {a.wall_seconds:.2f} s)"
    )
    print("-" * 78)
    print(
        f"R / B = {ratio_b:6.2f}   target >= {RATIO_TARGET:.1f}"
        f"   {verdict(ratio_b >= RATIO_TARGET)}"
    )
    print(f"R / A = {ratio_a:6.3f}   (share of the raw consumer ceiling; no target)")
    print("-" * 78)
    print(
        f"latency per hop, {len(runtime_lat.samples_ms)} + {len(pipe_lat.samples_ms)} messages"
        f" at {rate:.0f} msg/s (output CreateTime - input CreateTime, ms)"
    )
    print(f"{'':<28}{'p50':>10}{'p99':>10}{'max':>10}{'lost':>8}")
    for label, lat in (("runtime", runtime_lat), ("raw pipe", pipe_lat)):
        top = max(lat.samples_ms) if lat.samples_ms else math.nan
        print(
            f"{label:<28}{lat.percentile(50):>10.1f}{lat.percentile(99):>10.1f}{top:>10.1f}"
            f"{lat.lost:>8}"
        )
    added50 = runtime_lat.percentile(50) - pipe_lat.percentile(50)
    added99 = runtime_lat.percentile(99) - pipe_lat.percentile(99)
    print(f"{'added by the runtime':<28}{added50:>10.1f}{added99:>10.1f}")
    print(
        f"p99 added = {added99:.1f} ms   target <= {ADDED_P99_TARGET_MS:.0f} ms"
        f"   {verdict(added99 <= ADDED_P99_TARGET_MS)}"
    )
    print("-" * 78)


def cleanup(settings: Settings, run: str, stages: Sequence[str]) -> None:
    """Delete this run's rows; best effort, so a failure here never hides the run's own."""
    try:
        with connect(settings) as conn:
            conn.execute("DELETE FROM bench_results WHERE job_id LIKE %s", (f"bench-{run}-%",))
            conn.execute("DELETE FROM stage_runs WHERE stage = ANY(%s)", (list(stages),))
            conn.execute("DELETE FROM audit_log WHERE stage = ANY(%s)", (list(stages),))
    except Exception as exc:
        print(f"cleanup of run {run} failed (rows left behind): {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000, help="N for the rates")
    parser.add_argument("--latency-messages", type=int, default=300, help="M for latencies")
    parser.add_argument("--latency-rate", type=float, default=50.0, help="msg/s for latencies")
    args = parser.parse_args(argv)
    n, m, pace = args.messages, args.latency_messages, args.latency_rate

    logs.configure("WARNING")
    settings = Settings()
    codec = Codec(settings.registry_url)
    with connect(settings) as conn:
        migrate(conn)
        conn.execute(DDL)

    run = uuid.uuid4().hex[:8]
    base = f"bench.{run}"
    make_topics(
        settings,
        [
            (f"{base}.in", PARTITIONS, "JobRequested"),
            (f"{base}.out", PARTITIONS, "JobCompleted"),
            (f"{base}.dlq", 1, "DeadLetter"),
            (f"{base}.lat.in", PARTITIONS, "JobRequested"),
            (f"{base}.lat.out", PARTITIONS, "JobCompleted"),
            (f"{base}.lat.dlq", 1, "DeadLetter"),
            (f"{base}.pipe.in", PARTITIONS, "JobRequested"),
            (f"{base}.pipe.out", PARTITIONS, "JobRequested"),
        ],
    )
    throughput = BenchStage(
        name=f"bench_{run}",
        input_topic=f"{base}.in",
        output_topic=f"{base}.out",
        dlq_topic=f"{base}.dlq",
        group=f"{base}.rate",
    )
    latency = BenchStage(
        name=f"bench_{run}_lat",
        input_topic=f"{base}.lat.in",
        output_topic=f"{base}.lat.out",
        dlq_topic=f"{base}.lat.dlq",
        group=f"{base}.lat",
    )
    try:
        print(f"run {run}: producing {n} JobRequested to {base}.in ...", flush=True)
        produce_jobs(settings, codec, f"{base}.in", [f"bench-{run}-r-{i}" for i in range(n)])
        print("A: raw consume ...", flush=True)
        a = raw_consume(settings, f"{base}.in", n)
        print("B: upsert + commit per message ...", flush=True)
        b = upsert_loop(settings, f"bench-{run}-b", n, FLOOR_BUDGET_SECONDS)
        print("R: the runtime ...", flush=True)
        r = runtime_rate(settings, throughput, n)
        print(f"L: runtime latency, {m} messages at {pace:.0f}/s ...", flush=True)
        running = RunningWorker.start(latency.stage(), settings)
        try:
            lat_in, lat_out = latency.input_topic, latency.output_topic
            runtime_lat = paced_latency(settings, codec, lat_in, lat_out, f"bench-{run}-l", m, pace)
        finally:
            running.stop()
        print(f"L: raw pipe latency, {m} messages at {pace:.0f}/s ...", flush=True)
        stop_pipe = with_pipe(settings, f"{base}.pipe.in", f"{base}.pipe.out")
        try:
            pipe_lat = paced_latency(
                settings, codec, f"{base}.pipe.in", f"{base}.pipe.out", f"bench-{run}-p", m, pace
            )
        finally:
            stop_pipe()
        report(n, a, b, r, runtime_lat, pipe_lat, pace)
    finally:
        cleanup(settings, run, [throughput.name, latency.name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
