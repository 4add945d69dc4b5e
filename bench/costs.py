"""Does the cost aggregator scale out: one process, two, and Faust's own ceiling?

Run from the repo root against the local stack: ``python -m bench.costs [--events N]``.
Every measurement gets a fresh topic sized like ``vi.costs`` (the catalogue's spec), a
fresh consumer group and fresh customers. Its processes start first and the bench waits
until the group is stable with every partition held, so no join or rebalance is timed;
then N pre-encoded CostEvents are produced, keyed by customer as the stages key them.
The customers are chosen so each partition carries the same number of events (checked
from the delivery reports): two processes then get equal shares, and key skew is not
mistaken for a scaling limit. A rate runs from the first batch of the run to the last,
over every process of the group:

F1. Faust's no-op ceiling: one process of the aggregator's Faust app (same settings,
    same ``take_events`` batches, acked the same way) whose agent drops each batch
    without decoding it - what Faust itself costs per event;
F2. the same with two processes in one group;
A1. one ``vidinsight costs-aggregator`` process recording the events (decode, ledger,
    spend tables, budgets);
A2. two aggregator processes in one group, over the same events (same amounts, jobs
    and customer slots; fresh ids, since the ledger would drop repeats as duplicates).
    After A1 and after A2 the ledger and every spend table must hold, per customer,
    exactly the totals of the events produced (asserted). Every customer exists and
    one in four has a monthly budget (never reached), so the budget checks run;
B.  budget latency, on the first A1's aggregator once idle: one event takes a customer past its
    monthly budget; timed until ``sinks.budgets.is_over_budget`` answers yes.

The machine is shared: each measurement starts once the machine is nearly idle (or after
a minute), the four run ``--repeat`` times in turn, and the best of each is kept (someone
else's work can only slow a run down). CPU seconds over each measurement come from
/proc: each process of the group, the PostgreSQL backends serving the aggregators'
connections, all of PostgreSQL, the Kafka broker, this bench, and the machine's busy
time (what is left is someone else's).

Targets: A2 >= 1.5 x A1 and B <= 5 s; A1/F1 and F2/F1 are reported. Where the machine's
cores bound A2, the CPU per event says so, and a prediction for more cores is derived
from it (printed as derived, not measured). Exits 0 unless the totals are wrong. Topics,
ledger and spend rows stay (names never repeat; the customers are bench-only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import ConsumerGroupState, KafkaException, Producer

from bench.procfs import (
    listener_pid,
    machine_busy_seconds,
    socket_inodes,
    tcp_sockets,
    tree_cpu_seconds,
)
from schemas.codec import Codec
from sinks.budgets import is_over_budget
from sinks.customers import create_customer
from sinks.db import Connection, connect
from sinks.migrate import migrate
from topics.admin import admin_client, ensure_topics
from topics.catalogue import COSTS_TOPIC, TopicSpec, catalogue
from vidinsight.settings import REPO_ROOT, Settings

TWO_OVER_ONE_TARGET = 1.5
BUDGET_SECONDS_TARGET = 5.0
POLL_SECONDS = 0.05
SETTLE_SECONDS = 2.0  # after the group is stable: Faust seeks and starts its fetchers
RUN_TIMEOUT_SECONDS = 300.0
QUIET_SAMPLE_SECONDS = 0.5
QUIET_BUSY_SHARE = 0.2  # of all cores: the stack idles at a few percent
JOBS_PER_RUN = 50
STAGES = ("transcribe", "analyse", "synthesise")
NOOP_LINE = "faust-noop-batch"
BUDGETED_EVERY = 4
UNREACHED_BUDGET_USD_MICROS = 10**15
SPEND_TABLES = ("spend_customer_hour", "spend_customer_day", "spend_customer_stage", "spend_model")


# -- the events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One run's events: event i is for customer slot i % len(customers), every run alike."""

    run: str
    customers: list[str]
    values: list[dict[str, Any]]

    def expected(self) -> dict[str, tuple[int, int]]:
        """Each customer's (total micro-dollars, events): the ledger the events must leave."""
        totals: dict[str, tuple[int, int]] = {}
        for value in self.values:
            amount, count = totals.get(value["customer_id"], (0, 0))
            totals[value["customer_id"]] = (amount + value["amount_usd_micros"], count + 1)
        return totals

    def by_slot(self, totals: Mapping[str, tuple[int, int]]) -> list[tuple[int, int]]:
        """Totals in customer-slot order, comparable between runs with different ids."""
        return [totals.get(customer, (0, 0)) for customer in self.customers]


def balanced_customers(run: str, count: int, partitions: int) -> list[str]:
    """``count`` customer ids, ``count / partitions`` of them on each partition.

    librdkafka's default partitioner puts a key on CRC-32(key) mod partitions; the
    delivery reports check it (``produce``).
    """
    per_partition = count // partitions
    held: Counter[int] = Counter()
    chosen: list[str] = []
    candidate = 0
    while len(chosen) < count:
        customer = f"bench-{run}-{candidate}"
        partition = zlib.crc32(customer.encode()) % partitions
        if held[partition] < per_partition:
            held[partition] += 1
            chosen.append(customer)
        candidate += 1
    return chosen


def cost_event(run: str, index: int, customer: str) -> dict[str, Any]:
    """Event ``index`` of a run: its amount, stage and job follow from the index alone."""
    return {
        "event_id": f"bench-{run}-{index}",
        "customer_id": customer,
        "job_id": f"bench-{run}-job-{index % JOBS_PER_RUN}",
        "stage": STAGES[index % len(STAGES)],
        "provider": "openai",
        "model": "gpt-4o-mini",
        "unit": "tokens",
        "quantity": 100.0,
        "input_tokens": 80,
        "cached_tokens": 0,
        "output_tokens": 20,
        "amount_usd_micros": 1 + index % 997,
        "occurred_at_ms": int(time.time() * 1000),
    }


def workload(events: int, customers: int, partitions: int) -> Workload:
    """``events`` CostEvents, event i for customer slot i % ``customers``."""
    run = uuid.uuid4().hex[:8]
    ids = balanced_customers(run, customers, partitions)
    return Workload(run, ids, [cost_event(run, i, ids[i % customers]) for i in range(events)])


def costs_topic_spec(settings: Settings) -> TopicSpec:
    """A fresh topic configured as ``vi.costs`` (partitions, retention), on one replica."""
    spec = next(s for s in catalogue(settings) if s.name == COSTS_TOPIC)
    name = f"bench.{uuid.uuid4().hex[:10]}.costs"
    return replace(spec, name=name, replication_factor=1)


def new_topic(settings: Settings, spec: TopicSpec) -> str:
    ensure_topics(settings.kafka_bootstrap, [spec])
    return spec.name


def encode(codec: Codec, topic: str, values: Sequence[dict[str, Any]]) -> list[bytes]:
    """The wire-format values, encoded before the clock starts (encoding is the producer's)."""
    return [codec.encode(topic, "CostEvent", value) for value in values]


def produce(
    settings: Settings, topic: str, values: Sequence[dict[str, Any]], bodies: Sequence[bytes]
) -> Counter[int]:
    """Produce keyed by customer, wait for every ack; the events landed on each partition."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 20}
    )
    landed: Counter[int] = Counter()

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            landed[message.partition()] += 1

    for value, body in zip(values, bodies, strict=True):
        producer.produce(topic, key=value["customer_id"], value=body, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0, "events not delivered"
    assert sum(landed.values()) == len(values), f"only {sum(landed.values())} delivered"
    return landed


# -- the processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A batch a process finished: when (epoch seconds) and how many events."""

    at: float
    events: int


def aggregator_batches(log: Path) -> list[Batch]:
    """The aggregator's "batch recorded" lines (INFO), each logged once its batch committed."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"batch recorded: ' not in line:
            continue
        record = json.loads(line)
        at = datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        new = int(record["msg"].split()[2])
        found.append(Batch(at.timestamp(), new))
    return found


def noop_batches(log: Path) -> list[Batch]:
    """The no-op agent's lines: one per batch taken."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(NOOP_LINE):
            _, at, events = line.split()
            found.append(Batch(float(at), int(events)))
    return found


@dataclass
class Group:
    """``processes`` processes of one kind in one fresh consumer group on ``topic``."""

    settings: Settings
    kind: str  # "aggregator" or "noop"
    processes: int
    topic: str
    budgets_topic: str = ""
    group: str = field(default_factory=lambda: f"bench.costs.{uuid.uuid4().hex[:8]}")
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def __enter__(self) -> Group:
        for index in range(self.processes):
            log = Path(f"/tmp/{self.group}-{index + 1}.log")
            self.logs.append(log)
            self.running.append(self._start(log))
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.running:
            process.send_signal(signal.SIGTERM)  # Faust's worker stops cleanly on TERM
        for process in self.running:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _start(self, log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        if self.kind == "aggregator":
            command = [sys.executable, "-m", "cli.main", "costs-aggregator"]
            env |= {
                "VI_COSTS_INPUT_TOPIC": self.topic,
                "VI_COSTS_BUDGET_TOPIC": self.budgets_topic,
                "VI_COSTS_APP_ID": self.group,
                "VI_LOG_LEVEL": "INFO",  # one "batch recorded" line per batch: the timing
            }
        else:
            command = [sys.executable, "-m", "bench.costs", "--faust-noop", self.topic]
            command += ["--group", self.group]
        with log.open("ab") as out:
            return subprocess.Popen(
                command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def batches(self) -> list[list[Batch]]:
        """Each process's finished batches so far."""
        read = aggregator_batches if self.kind == "aggregator" else noop_batches
        return [read(log) for log in self.logs]

    def check_alive(self) -> None:
        for process, log in zip(self.running, self.logs, strict=True):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{log} exited with {process.returncode}:\n{tail}")

    def wait_until_assigned(self, partitions: int, timeout: float = 120.0) -> list[int]:
        """Wait for a stable group whose members each hold partitions; how many each holds."""
        admin = admin_client(self.settings.kafka_bootstrap)
        deadline = time.monotonic() + timeout
        held: list[int] = []
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                found = admin.describe_consumer_groups([self.group], request_timeout=5)
                described = found[self.group].result()
            except KafkaException:
                time.sleep(0.2)
                continue
            held = [len(m.assignment.topic_partitions) for m in described.members]
            stable = described.state == ConsumerGroupState.STABLE
            if stable and len(held) == self.processes and all(held) and sum(held) == partitions:
                time.sleep(SETTLE_SECONDS)
                return held
            time.sleep(0.2)
        raise TimeoutError(f"{self.group}: {self.processes} members not assigned: {held}")


# -- CPU seconds of the aggregators and what serves them ---------------------------------


def postgres_client_ports(pid: int, postgres_port: int) -> set[int]:
    """The local ports of ``pid``'s TCP connections to PostgreSQL (its pool's sockets)."""
    inodes = socket_inodes(pid)
    return {
        local
        for local, remote, _, inode in tcp_sockets()
        if remote == postgres_port and inode in inodes
    }


def backend_pids(conn: Connection, ports: set[int]) -> list[int]:
    """The PostgreSQL backends serving the connections from those local ports."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE client_addr = '127.0.0.1' AND client_port = ANY(%s)",
        (sorted(ports),),
    ).fetchall()
    return [int(r["pid"]) for r in rows]


@dataclass
class CpuMeter:
    """CPU seconds of everything that works for a measurement, read before and after."""

    settings: Settings
    conn: Connection

    def snapshot(self, group: Group) -> dict[tuple[str, int], float]:
        """(what, index or pid) -> CPU seconds so far; backends keyed by pid, as they come
        and go with the pool."""
        seen: dict[tuple[str, int], float] = {("machine", 0): machine_busy_seconds()}
        seen[("bench", 0)] = time.process_time()
        port = urlsplit(self.settings.database_url).port or 5432
        kafka_port = int(self.settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
        for service, listening in (("postgres", port), ("kafka", kafka_port)):
            pid = listener_pid(listening)
            if pid is not None:
                seen[(service, 0)] = tree_cpu_seconds(pid)
        for index, process in enumerate(group.running, start=1):
            seen[("process", index)] = tree_cpu_seconds(process.pid)
            for backend in backend_pids(self.conn, postgres_client_ports(process.pid, port)):
                seen[(f"backends of {index}", backend)] = tree_cpu_seconds(backend)
        return seen


def cpu_spent(
    before: Mapping[tuple[str, int], float], after: Mapping[tuple[str, int], float]
) -> dict[str, float]:
    """CPU seconds between two snapshots, backends summed per process; a backend new since
    ``before`` counts from its start."""
    spent: dict[str, float] = {}
    for (what, key), seconds in after.items():
        name = f"process {key}" if what == "process" else what
        spent[name] = spent.get(name, 0.0) + seconds - before.get((what, key), 0.0)
    return spent


# -- a measurement -------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one measurement saw."""

    label: str
    events: int
    rate: float  # events/s from the first batch to the last
    seconds: float  # wall time of the CPU window: production start to the last batch
    per_process: list[int]  # events each process handled
    held: list[int]  # partitions each process held
    cpu: dict[str, float]

    def processes_cpu(self) -> list[float]:
        return [self.cpu[f"process {i}"] for i in range(1, len(self.per_process) + 1)]

    def backends_cpu(self) -> list[float]:
        return [self.cpu.get(f"backends of {i}", 0.0) for i in range(1, len(self.per_process) + 1)]

    def accounted_cpu(self) -> float:
        """CPU of the processes, PostgreSQL, Kafka and the bench (backends are in postgres)."""
        return sum(self.processes_cpu()) + sum(
            self.cpu.get(k, 0.0) for k in ("postgres", "kafka", "bench")
        )


def wait_for_quiet(timeout: float = 60.0) -> None:
    """Start when the machine is nearly idle: the machine is shared, and someone else's
    burst would be timed as ours (the "other" CPU of each run shows what was left)."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = machine_busy_seconds()
        time.sleep(QUIET_SAMPLE_SECONDS)
        if machine_busy_seconds() - before <= QUIET_BUSY_SHARE * cores * QUIET_SAMPLE_SECONDS:
            return


def rate_of(batches: Sequence[Sequence[Batch]]) -> float:
    """Events per second from the first batch finished to the last, over all processes."""
    ordered = sorted((b for process in batches for b in process), key=lambda b: b.at)
    counted = sum(b.events for b in ordered[1:])
    return counted / (ordered[-1].at - ordered[0].at)


def measure(
    label: str, group: Group, meter: CpuMeter, spec: TopicSpec, load: Workload, codec: Codec
) -> Run:
    """Wait for the group, produce the events, wait until every one is through."""
    bodies = encode(codec, group.topic, load.values)
    held = group.wait_until_assigned(spec.partitions)
    wait_for_quiet()
    before = meter.snapshot(group)
    started = time.monotonic()
    landed = produce(group.settings, group.topic, load.values, bodies)
    per_partition = len(load.values) // spec.partitions
    assert set(landed.values()) == {per_partition}, f"unbalanced partitions: {landed}"
    deadline = started + RUN_TIMEOUT_SECONDS
    while sum(b.events for p in group.batches() for b in p) < len(load.values):
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: not every event through in {RUN_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)
    seconds = time.monotonic() - started
    cpu = cpu_spent(before, meter.snapshot(group))
    batches = group.batches()
    per_process = [sum(b.events for b in process) for process in batches]
    return Run(label, len(load.values), rate_of(batches), seconds, per_process, held, cpu)


def register_customers(conn: Connection, load: Workload) -> None:
    """Every customer of the run exists, as the gateway creates them; one in
    ``BUDGETED_EVERY`` has a monthly budget it never reaches, so the aggregator's budget
    checks run for them as for customers who set one."""
    conn.execute(
        "INSERT INTO customers (customer_id, name, monthly_budget_usd_micros)"
        " SELECT customer_id, 'bench', CASE WHEN n %% %s = 0 THEN %s END"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS c(customer_id, n)",
        (BUDGETED_EVERY, UNREACHED_BUDGET_USD_MICROS, load.customers),
    )


def recorded_totals(conn: Connection, load: Workload) -> dict[str, dict[str, tuple[int, int]]]:
    """Per table (the ledger, each spend table): each customer's (micro-dollars, events)."""
    found: dict[str, dict[str, tuple[int, int]]] = {}
    counted = "sum(amount_usd_micros)::bigint AS amount, {events}::bigint AS events"
    tables = {"cost_ledger": "count(*)", **{t: "sum(event_count)" for t in SPEND_TABLES}}
    for table, events in tables.items():
        rows = conn.execute(
            f"SELECT customer_id, {counted.format(events=events)} FROM {table}"
            " WHERE customer_id = ANY(%s) GROUP BY 1",
            (load.customers,),
        ).fetchall()
        found[table] = {r["customer_id"]: (int(r["amount"]), int(r["events"])) for r in rows}
    jobs = sorted({value["job_id"] for value in load.values})
    rows = conn.execute(
        f"SELECT customer_id, {counted.format(events='sum(event_count)')} FROM spend_job"
        " WHERE job_id = ANY(%s) AND customer_id = ANY(%s) GROUP BY 1",
        (jobs, load.customers),
    ).fetchall()
    found["spend_job"] = {r["customer_id"]: (int(r["amount"]), int(r["events"])) for r in rows}
    return found


def check_totals(conn: Connection, label: str, load: Workload) -> list[tuple[int, int]]:
    """Assert the ledger and every spend table hold the produced events' totals, per
    customer; return them in slot order (to compare runs)."""
    expected = load.expected()
    for table, totals in recorded_totals(conn, load).items():
        assert totals == expected, f"{label}: {table} differs from the events produced"
    return load.by_slot(expected)


def budget_latency(settings: Settings, codec: Codec, conn: Connection, topic: str) -> float:
    """B: seconds from producing a budget-crossing event to the check answering yes."""
    customer, _ = create_customer(conn, "bench budget", monthly_budget_usd_micros=1_000)
    value = {**cost_event(uuid.uuid4().hex[:8], 0, customer), "amount_usd_micros": 1_000}
    now = datetime.now(UTC)
    assert not is_over_budget(conn, customer, now)
    body = encode(codec, topic, [value])
    start = time.perf_counter()
    produce(settings, topic, [value], body)
    while not is_over_budget(conn, customer, now):
        if time.perf_counter() - start > 60:
            raise TimeoutError("budget crossing not seen in 60 s")
        time.sleep(0.01)
    return time.perf_counter() - start


# -- Faust's no-op ceiling (the body of the F processes) -----------------------------------


def faust_noop(settings: Settings, topic: str, group: str) -> None:
    """The aggregator's Faust app and batches, each batch dropped undecoded; prints one
    line per batch until SIGTERM."""
    import faust
    from faust.streams import Stream

    from streams.costs.app import faust_app

    app = faust_app(group, settings)
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")

    @app.agent(source)
    async def drop(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, Stream)
        async for events in stream.take_events(
            settings.costs_batch_max_events, within=settings.costs_batch_max_wait_seconds
        ):
            print(f"{NOOP_LINE} {time.time():.6f} {len(events)}", flush=True)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


# -- the report ----------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _seconds(values: Sequence[float]) -> str:
    return " + ".join(f"{v:.2f}" for v in values)


def report_run(run: Run) -> None:
    cores = os.cpu_count() or 1
    share = [f"{n:,}" for n in run.per_process]
    print(
        f"{run.label}: {run.rate:8,.0f} events/s  (events per process {' + '.join(share)},"
        f" partitions held {run.held}, window {run.seconds:.2f} s)"
    )
    busy = [f"{c / run.seconds:.2f}" for c in run.processes_cpu()]
    line = f"    CPU s: process {_seconds(run.processes_cpu())} (of a core: {', '.join(busy)})"
    if any(run.backends_cpu()):
        line += f"; their PG backends {_seconds(run.backends_cpu())}"
    print(line)
    other = run.cpu["machine"] - run.accounted_cpu()
    print(
        f"    PostgreSQL (all) {run.cpu.get('postgres', 0):.2f}, Kafka broker"
        f" {run.cpu.get('kafka', 0):.2f}, bench {run.cpu['bench']:.2f}, other {other:.2f};"
        f" machine busy {run.cpu['machine']:.2f} of {cores} x {run.seconds:.2f} ="
        f" {cores * run.seconds:.2f} s ({run.cpu['machine'] / (cores * run.seconds):.0%})"
    )


def report_prediction(one: Run, two: Run) -> None:
    """Where two processes went, and what the per-event CPU predicts on more cores."""
    cores = os.cpu_count() or 1
    per_event = {
        "aggregators": sum(two.processes_cpu()) / two.events,
        "PostgreSQL": two.cpu.get("postgres", 0.0) / two.events,
        "Kafka broker": two.cpu.get("kafka", 0.0) / two.events,
    }
    total = sum(per_event.values())
    parts = ", ".join(f"{k} {v * 1e6:.0f}" for k, v in per_event.items())
    print(f"A2 CPU per event (us): {parts}; total {total * 1e6:.0f}")
    print(
        f"  {cores} cores at that cost carry at most {cores / total:,.0f} events/s"
        f" (measured A2: {two.rate:,.0f}); machine busy {two.cpu['machine'] / two.seconds:.2f}"
        f" of {cores} cores"
    )
    per_process = one.rate
    print(
        f"  derived, not measured: n processes (n <= the {sum(one.held)} partitions) on c cores"
        " ~ min(n x A1, c / CPU per event)"
    )
    for n, c in ((2, 3), (2, 4), (3, 4), (6, 8)):
        predicted = min(n * per_process, c / total)
        print(f"    n={n}, c={c}: {predicted:8,.0f} events/s ({predicted / one.rate:.2f} x A1)")
    print(
        "  assumes each process keeps A1's rate given a core of its own and the per-event"
        " CPU of A2 (PostgreSQL and Kafka included) stays as measured"
    )


MEASUREMENTS = (
    ("F1", "Faust no-op, 1 process ", "noop", 1),
    ("F2", "Faust no-op, 2 processes", "noop", 2),
    ("A1", "aggregator, 1 process   ", "aggregator", 1),
    ("A2", "aggregator, 2 processes ", "aggregator", 2),
)


@dataclass
class Bench:
    """The measurements of one invocation, and what they must agree on."""

    settings: Settings
    codec: Codec
    conn: Connection
    spec: TopicSpec
    budgets_topic: str
    events: int
    customers: int
    totals: list[list[tuple[int, int]]] = field(default_factory=list)
    latency: float | None = None

    def run(self, label: str, kind: str, processes: int) -> Run:
        """One measurement on a fresh topic, group and customers; totals checked after."""
        load = workload(self.events, self.customers, self.spec.partitions)
        topic = new_topic(self.settings, costs_topic_spec(self.settings))
        if kind == "aggregator":
            register_customers(self.conn, load)
        meter = CpuMeter(self.settings, self.conn)
        with Group(self.settings, kind, processes, topic, self.budgets_topic) as group:
            run = measure(label, group, meter, self.spec, load, self.codec)
            if kind == "aggregator":
                self.totals.append(check_totals(self.conn, label, load))
                if self.latency is None:
                    self.latency = budget_latency(self.settings, self.codec, self.conn, topic)
        return run


def report_summary(best: Mapping[str, Run], bench: Bench, repeats: int) -> None:
    assert all(t == bench.totals[0] for t in bench.totals), "the runs' totals differ"
    amount = sum(a for a, _ in bench.totals[0])
    print(
        f"totals after each of the {len(bench.totals)} aggregator runs: identical, and equal to"
        " the events produced, in the ledger and in every spend table (hour, day, stage, job,"
        f" model): {bench.customers} customers, {bench.events:,} events, {amount:,} micro-dollars"
    )
    f1, f2, a1, a2 = (best[key] for key, *_ in MEASUREMENTS)
    print(f"best of {repeats}: " + ", ".join(f"{k} {r.rate:,.0f}" for k, r in best.items()))
    print(f"A1/F1 = {a1.rate / f1.rate:.2f} (aggregator / Faust's no-op ceiling, one process)")
    print(f"F2/F1 = {f2.rate / f1.rate:.2f} (Faust alone, two processes / one)")
    two_over_one = a2.rate / a1.rate
    print(
        f"A2/A1 = {two_over_one:.2f} (target >= {TWO_OVER_ONE_TARGET})"
        f" {_verdict(two_over_one >= TWO_OVER_ONE_TARGET)}"
    )
    report_prediction(a1, a2)
    latency = bench.latency or 0.0
    print(
        f"B budget crossing -> is_over_budget yes: {latency * 1000:.0f} ms"
        f" (target <= {BUDGET_SECONDS_TARGET:.0f} s) {_verdict(latency <= BUDGET_SECONDS_TARGET)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=24_000)
    parser.add_argument("--customers", type=int, default=240)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--faust-noop", metavar="TOPIC", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = Settings()
    if args.faust_noop:
        faust_noop(settings, args.faust_noop, args.group)
        return 0
    spec = costs_topic_spec(settings)
    if args.customers % spec.partitions or args.events % args.customers:
        raise SystemExit(
            f"--customers must be a multiple of {spec.partitions} (partitions) and --events"
            " of --customers, so every partition carries the same number of events"
        )
    budgets = TopicSpec(
        name=f"bench.{uuid.uuid4().hex[:10]}.budgets",
        partitions=1,
        replication_factor=1,
        value_schema="BudgetEvent",
    )
    print(
        f"events: {args.events:,} per run over {args.customers} customers, topics of"
        f" {spec.partitions} partitions (as {COSTS_TOPIC}), {os.cpu_count()} CPUs;"
        " process logs in /tmp/bench.costs.*"
    )
    best: dict[str, Run] = {}
    with connect(settings) as conn:
        migrate(conn)
        bench = Bench(
            settings,
            Codec(settings.registry_url),
            conn,
            spec,
            new_topic(settings, budgets),
            args.events,
            args.customers,
        )
        for _ in range(args.repeat):
            for key, title, kind, processes in MEASUREMENTS:
                run = bench.run(f"{key} {title}", kind, processes)
                report_run(run)
                if key not in best or run.rate > best[key].rate:
                    best[key] = run
    report_summary(best, bench, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
