"""One run of the soak: a private platform, the batch submitted over time, faults if asked,
and everything the report needs read back once the platform is quiet.

The same batch runs twice, first without faults and then with them, each on a stack
started from nothing (a fresh database, so no answer is served from the other run's
prompt cache). Jobs are submitted the way a careful customer submits them: each with an
Idempotency-Key, retried after a dropped connection, a 503 or a 429 (after Retry-After),
so a gateway killed mid-request costs a retry and never a second job.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from psycopg.rows import dict_row

from sinks.customers import create_customer
from sinks.db import Connection, connect
from sinks.deliveries import job_deliveries
from tests.faults import bad_inputs
from tests.faults.batch import Item
from tests.faults.burst import BurstTally, fire_burst
from tests.faults.compare import JobRecord, snapshot
from tests.faults.faults import Fault, FaultPlan, Injector, schedule
from tests.faults.invariants import (
    Check,
    i1_nothing_lost,
    i4_logs,
    i5_costs_attributed,
    i6_tenants_isolated,
)
from tests.faults.lag import LagMonitor
from tests.faults.llm_server import LlmServer
from tests.faults.proxy import TcpProxy
from tests.faults.stack import PrivateStack, StackPorts
from tests.fixtures.network import Receiver
from topics.catalogue import COSTS_TOPIC
from vidinsight.settings import Settings

T = TypeVar("T")
LLM_MODEL = "openai/gpt-4o-mini"  # priced from the pricing file; served by the soak's server
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Processes sending a burst (one event loop falls behind on CPUs the platform keeps busy).
BURST_PROCESSES = 4


@dataclass(frozen=True)
class Profile:
    """How big a soak is: the batch, the faults, the burst and the bounds it must keep."""

    name: str
    lengths: list[int]  # seconds of each talk in the batch
    customers: int
    submit_seconds: float  # the batch is submitted evenly over this long
    plan: FaultPlan
    burst_requests: int
    burst_seconds: float
    burst_customers: int
    max_in_flight: int  # per customer (the gateway's quota), so a burst is partly shed
    stall_bound_seconds: float
    job_timeout_seconds: float
    max_duration_seconds: int
    # Settings beyond the defaults (the short profile shortens webhook retries so its
    # silent receiver settles in seconds; the full one runs with the defaults).
    settings: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(
        default_factory=lambda: {
            "ingest": 2,
            "preprocess": 2,
            "scenes": 2,
            "transcribe": 2,
            "analyse": 2,
        }
    )


@dataclass(frozen=True)
class Media:
    """The files a run submits, made once for both runs."""

    batch: list[Item]
    burst_video: Path
    cases: list[bad_inputs.BadCase]
    folder: Path


@dataclass
class Services:
    """The soak's own test servers, alive across both runs."""

    llm: LlmServer
    proxy: TcpProxy
    receiver: Receiver
    silent: bad_inputs.SilentServer
    ports: StackPorts


@dataclass
class RunResult:
    """What one run left behind, for the comparison and the report."""

    faulted: bool
    seconds: float
    names: dict[str, str]  # job id -> name, for the batch and the bad inputs
    records: dict[str, JobRecord]
    accepted: list[str]
    outcomes: dict[str, dict[str, Any]]  # name -> status, reason
    checks: dict[str, Check]
    lag: dict[str, Any]
    stall_violations: list[str]
    burst: BurstTally | None = None
    faults: list[Fault] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    garbage: dict[str, Any] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)
    recovery: list[dict[str, Any]] = field(default_factory=list)
    wrong_ends: dict[str, str] = field(default_factory=dict)  # bad input -> what is wrong
    burst_wait: float = 0.0


def platform_env(profile: Profile, services: Services) -> dict[str, str]:
    """The settings the private platform runs with (beyond the stack's addresses)."""
    return {
        "VI_LLM_MODELS": json.dumps({"default": [LLM_MODEL]}),
        "VI_LLM_API_BASES": json.dumps({LLM_MODEL: services.llm.url}),
        "VI_LLM_API_KEY_ENVS": json.dumps({LLM_MODEL: "VI_SOAK_LLM_KEY"}),
        "VI_SOAK_LLM_KEY": "soak-llm-key",
        "VI_LLM_TIMEOUT_SECONDS": "10",
        "VI_MAX_DURATION_SECONDS": str(profile.max_duration_seconds),
        "VI_GATEWAY_MAX_JOBS_IN_FLIGHT": str(profile.max_in_flight),
        "VI_FETCH_ALLOWED_NETWORKS": "127.0.0.0/8",
        "VI_WEBHOOK_SECRETS_KEY": "soak-webhook-secrets-key",
        "VI_RESTART_MAX_DELAY_SECONDS": "5",
        **profile.settings,
    }


def retrying(action: Callable[[], T], deadline: float) -> T:
    """``action`` until it stops failing for a reason a retry can fix, or the deadline."""
    while True:
        try:
            return action()
        except httpx.TransportError:
            wait = 1.0
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in RETRY_STATUSES:
                raise
            wait = float(exc.response.headers.get("Retry-After", "1"))
        if time.monotonic() + wait > deadline:
            raise TimeoutError("the gateway kept refusing")
        time.sleep(wait)


def upload_video(client: httpx.Client, video: Path, deadline: float) -> str:
    """Upload ``video`` (again after a dropped connection); its upload id."""

    def upload() -> str:
        with video.open("rb") as body:
            answer = client.post("/v1/uploads", content=body, headers={"Content-Type": "video/mp4"})
        return str(answer.raise_for_status().json()["upload_id"])

    return retrying(upload, deadline)


def submit_video(client: httpx.Client, video: Path, key: str, extra: dict[str, Any]) -> str:
    """Upload ``video`` and submit it once, whatever the gateway does meanwhile."""
    deadline = time.monotonic() + 300
    upload_id = upload_video(client, video, deadline)

    def submit() -> str:
        answer = client.post(
            "/v1/jobs", json={"upload_id": upload_id, **extra}, headers={"Idempotency-Key": key}
        )
        return str(answer.raise_for_status().json()["job_id"])

    return retrying(submit, deadline)


@dataclass
class Run:
    """The state of one run while it goes."""

    profile: Profile
    seed: int
    media: Media
    services: Services
    stack: PrivateStack
    faulted: bool
    keys: dict[str, str] = field(default_factory=dict)  # customer id -> API key
    names: dict[str, str] = field(default_factory=dict)
    jobs_of: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = 0.0
    cases: dict[str, tuple[bad_inputs.BadCase, str, str]] = field(default_factory=dict)
    cost_garbage: int = 0
    burst_wait: float = 0.0  # seconds the burst waited for a restarting gateway
    refused: dict[str, bad_inputs.Refused] = field(default_factory=dict)

    def client(self, customer: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.gateway_url,
            headers={"Authorization": f"Bearer {self.keys[customer]}"},
            timeout=120,
        )

    def connect(self) -> AbstractContextManager[Connection]:
        """A connection to the private stack's database (autocommit, rows as dicts)."""
        return connect(Settings(database_url=self.stack.database_url))

    def customers(self, prefix: str, count: int) -> list[str]:
        made = []
        with self.connect() as conn:
            for index in range(count):
                customer, key = create_customer(conn, f"{prefix}-{index}")
                self.keys[customer] = key
                made.append(customer)
        return made

    @property
    def accepted(self) -> list[str]:
        """Every job the gateway accepted in this run, of every customer."""
        with self.lock:
            return [job for jobs in self.jobs_of.values() for job in jobs]

    def accept(self, customer: str, job_id: str, name: str | None) -> None:
        with self.lock:
            self.jobs_of.setdefault(customer, []).append(job_id)
            if name is not None:
                self.names[job_id] = name

    def guarded(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{what}: {exc!r}")

    def now(self) -> float:
        return time.monotonic() - self.started


def submit_batch(run: Run, customers: list[str]) -> None:
    """The batch and the bad inputs, evenly over the profile's submission time."""
    items: list[tuple[str, Callable[[], None]]] = []
    receiver = f"http://127.0.0.1:{run.services.receiver.port}/hook"
    for index, item in enumerate(run.media.batch):
        customer = customers[index % len(customers)]
        extra = {"webhook_url": receiver} if index % 3 == 0 else {}

        def good(
            item: Item = item, customer: str = customer, extra: dict[str, Any] = extra
        ) -> None:
            with run.client(customer) as client:
                job = submit_video(client, item.video, f"{item.name}", extra)
            run.accept(customer, job, item.name)

        items.append((item.name, good))
    for index, case in enumerate(run.media.cases):
        customer = customers[index % len(customers)]

        def bad(case: bad_inputs.BadCase = case, customer: str = customer) -> None:
            with run.client(customer) as client:
                try:
                    job = retrying(
                        lambda: bad_inputs.submit_case(case, client), time.monotonic() + 300
                    )
                except bad_inputs.Refused as refused:
                    run.refused[case.name] = refused
                    return
                run.accept(customer, job, case.name)
                run.cases[case.name] = (case, customer, job)
                if case.cancel:
                    bad_inputs.cancel_when_running(client, job, run.profile.job_timeout_seconds)

        items.append((case.name, bad))
    gap = run.profile.submit_seconds / max(1, len(items))
    threads = []
    for position, (name, action) in enumerate(items):
        time.sleep(max(0.0, position * gap - run.now()))
        thread = threading.Thread(target=run.guarded, args=(name, action), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()


def burst(run: Run, at: float) -> BurstTally:
    """Many submissions at once from customers of their own, at ``at`` seconds."""
    customers = run.customers("burst", run.profile.burst_customers)
    templates = []
    for customer in customers:
        with run.client(customer) as client:
            upload = upload_video(client, run.media.burst_video, time.monotonic() + 300)
        templates.append((customer, run.keys[customer], {"upload_id": upload}))
    time.sleep(max(0.0, at - run.now()))
    # A gateway killed just before is restarting: with one replica its port refuses
    # connections meanwhile, which no load balancer in front of several would show.
    run.burst_wait = wait_serving(run.stack.gateway_url, timeout=120)
    tally = fire_burst(
        run.stack.gateway_url,
        templates,
        total=run.profile.burst_requests,
        window_seconds=run.profile.burst_seconds,
        # One connection per request: all are sent within the window however slowly the
        # gateway answers (a cap would hold later requests back until earlier ones end).
        max_concurrency=run.profile.burst_requests,
        processes=BURST_PROCESSES,
    )
    for customer, job_id in tally.accepted:
        run.accept(customer, job_id, None)
    return tally


def wait_serving(gateway_url: str, timeout: float) -> float:
    """Seconds until the gateway answers /healthz (it may be restarting after a kill)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if httpx.get(f"{gateway_url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return round(time.monotonic() - began, 1)


def wait_ended(run: Run, timeout: float) -> None:
    """Until every accepted job has ended (or ``timeout``; I1 then counts the rest lost)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(run.stack.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            ids = run.accepted
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE job_id = ANY(%s)"
                " AND status NOT IN ('completed', 'failed', 'cancelled')",
                (ids,),
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(2)


def job_waits(database_url: str, ids: list[str]) -> dict[str, float]:
    """The longest any job waited for its first stage, and the longest any job took."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT max(first_start - created_at) AS waited, max(last_end - created_at) AS took"
            " FROM jobs j JOIN (SELECT job_id, min(started_at) AS first_start,"
            " max(finished_at) AS last_end FROM stage_runs GROUP BY job_id) r USING (job_id)"
            " WHERE job_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert row is not None
    return {
        "longest_wait_for_first_stage_seconds": _seconds(row["waited"]),
        "longest_job_seconds": _seconds(row["took"]),
    }


def _seconds(interval: Any) -> float:
    return round(interval.total_seconds(), 1) if interval is not None else 0.0


def webhook_duplicates(receiver: Receiver) -> dict[str, int]:
    """Deliveries the receiver took: distinct webhook ids per job beyond one are duplicates."""
    ids_per_job: dict[str, set[str]] = {}
    calls = 0
    for headers, body in list(receiver.calls):
        calls += 1
        job = json.loads(body).get("job_id", "?")
        lower = {k.lower(): v for k, v in headers.items()}
        ids_per_job.setdefault(job, set()).add(lower.get("webhook-id", ""))
    return {
        "deliveries": calls,
        "jobs_notified": len(ids_per_job),
        "duplicate_deliveries": sum(len(ids) - 1 for ids in ids_per_job.values()),
        "repeated_same_id": calls - sum(len(ids) for ids in ids_per_job.values()),
    }


def recovery_times(
    faults: list[Fault], series: dict[str, list[tuple[float, int, int]]]
) -> list[dict[str, Any]]:
    """After each fault, how long until each stage that had work moved its offsets again."""
    rows = []
    for fault in faults:
        if fault.ended is None:
            continue
        for group, samples in series.items():
            after = [s for s in samples if s[0] >= fault.ended]
            if not after or after[0][1] == 0:
                continue  # nothing waiting when the fault ended: nothing to recover
            base = after[0][2]
            moved = next((t for t, lag, committed in after if committed > base or lag == 0), None)
            rows.append(
                {
                    "fault": fault.kind,
                    "target": fault.target,
                    "group": group,
                    "seconds": None if moved is None else round(moved - fault.ended, 1),
                }
            )
    return rows


def execute(
    profile: Profile, seed: int, media: Media, services: Services, state: Path, *, faulted: bool
) -> RunResult:
    """One whole run on a stack started from nothing; the stack is down when it returns."""
    stack = PrivateStack(state, profile.replicas, platform_env(profile, services), services.ports)
    stack.wipe()
    services.llm.set_mode("ok")
    services.receiver.calls.clear()
    began = time.monotonic()
    try:
        stack.up()
        run = Run(profile, seed, media, services, stack, faulted)
        return _drive(run, began)
    finally:
        stack.down()


def _drive(run: Run, began: float) -> RunResult:
    profile, stack = run.profile, run.stack
    customers = run.customers("soak", profile.customers)
    lag = LagMonitor(stack.kafka_bootstrap, interval_seconds=1.0)
    faults: list[Fault] = []
    injector: Injector | None = None
    tally: BurstTally | None = None
    garbage: list[tuple[str, int, int]] = []
    run.started = time.monotonic()
    lag.start()
    threads: list[threading.Thread] = []
    try:
        if run.faulted:
            faults = schedule(profile.plan, run.seed, stack.workers())
            injector = Injector(
                stack,
                run.services.llm,
                run.services.proxy,
                faults,
                stack.state_dir / "full-disk",
                profile.plan,
            )
            injector.start()
            burst_at = _burst_time(profile, run.seed)
            results: list[BurstTally] = []
            threads.append(_thread(run, "burst", lambda: results.append(burst(run, burst_at))))
        threads.append(_thread(run, "batch", lambda: submit_batch(run, customers)))
        garbage = bad_inputs.inject_garbage(stack.kafka_bootstrap, bad_inputs.garbage_topics())
        # The cost aggregator counts and skips what it cannot decode (no dead-letter
        # topic): its lag returning to zero and the ledger's sums (I5) are the proof.
        run.cost_garbage = len(bad_inputs.inject_garbage(stack.kafka_bootstrap, [COSTS_TOPIC]))
        for thread in threads:
            thread.join()
        if injector is not None:
            injector.join(timeout=profile.job_timeout_seconds)
            run.errors += injector.errors
            tally = results[0] if results else None
        wait_ended(run, profile.job_timeout_seconds)
        drained = lag.wait_drained(timeout=profile.job_timeout_seconds)
        if not drained:
            run.errors.append("consumer lag did not return to zero")
    finally:
        lag.stop()
    return _collect(run, began, lag, faults, tally, garbage)


def _burst_time(profile: Profile, seed: int) -> float:
    """Within the fault window, after the gateway's kill: drawn from its own stream."""
    start = max(profile.plan.window[0], profile.plan.gateway_kill_window[1])
    return random_for(seed, "burst").uniform(start, max(start, profile.plan.window[1]))


def random_for(seed: int, purpose: str) -> random.Random:
    """A stream of its own for one purpose, so adding a fault kind moves no other draw."""
    return random.Random(f"{seed}:{purpose}")


def _thread(run: Run, name: str, action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=run.guarded, args=(name, action), name=name, daemon=True)
    thread.start()
    return thread


def _collect(
    run: Run,
    began: float,
    lag: LagMonitor,
    faults: list[Fault],
    tally: BurstTally | None,
    garbage: list[tuple[str, int, int]],
) -> RunResult:
    stack = run.stack
    accepted = run.accepted
    records = snapshot(stack.database_url, run.names, str(stack.state_dir))
    batch_customers = {c: k for c, k in run.keys.items() if c in run.jobs_of}
    checks = {
        "I1": i1_nothing_lost(stack.database_url, accepted),
        "I4": i4_logs(stack.log_lines()),
        "I5": i5_costs_attributed(stack.database_url),
        "I6": i6_tenants_isolated(stack.gateway_url, batch_customers, run.jobs_of),
    }
    found = bad_inputs.dead_lettered(stack.kafka_bootstrap, garbage, timeout=60)
    wrong_ends = check_cases(run)
    summary = lag.summary()
    stall_violations = [
        f"{group}: offsets stood still {figures['longest_stall_seconds']} s with work waiting"
        for group, figures in summary["groups"].items()
        if figures["longest_stall_seconds"] > run.profile.stall_bound_seconds
    ]
    return RunResult(
        faulted=run.faulted,
        seconds=round(time.monotonic() - began, 1),
        names=run.names,
        records=records,
        accepted=accepted,
        outcomes={name: {"status": r.status, "reason": r.reason} for name, r in records.items()},
        checks=checks,
        lag=summary,
        stall_violations=stall_violations,
        burst=tally,
        faults=faults,
        harness_errors=run.errors,
        garbage={
            "injected_on_the_costs_topic": run.cost_garbage,
            "injected": len(garbage),
            "letters_expected": len(bad_inputs.expected_letters(garbage)),
            "dead_lettered": len(found),
            "missing": [
                [*position, stage]
                for position, stage in bad_inputs.expected_letters(garbage)
                if (position, stage) not in found
            ],
        },
        webhooks=webhook_duplicates(run.services.receiver),
        wrong_ends=wrong_ends,
        burst_wait=run.burst_wait,
        waits=job_waits(stack.database_url, accepted),
        recovery=recovery_times(faults, lag.series(since=run.started)),
    )


def check_cases(run: Run) -> dict[str, str]:
    """Each bad input against the end it must reach (waiting for a webhook's last try)."""
    wrong: dict[str, str] = {}
    for case in run.media.cases:
        if case.name in run.refused:
            problem = bad_inputs.check_case(case, run.refused[case.name])
        elif case.name in run.cases:
            problem = _check_job(run, *run.cases[case.name])
        else:
            problem = "never submitted (see harness errors)"
        if problem:
            wrong[case.name] = problem
    return wrong


def _check_job(run: Run, case: bad_inputs.BadCase, customer: str, job_id: str) -> str | None:
    deadline = time.monotonic() + run.profile.job_timeout_seconds
    with run.client(customer) as client:
        while True:
            job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
            if bad_inputs.settled(case, job) or time.monotonic() > deadline:
                break
            time.sleep(1)
    with run.connect() as conn:
        deliveries = job_deliveries(conn, job_id)
    return bad_inputs.check_case(case, job, deliveries)
