"""How fast is the whole platform, next to the one-process script it replaces?

Run from the repo root with the stack's infrastructure up, holding the lock the tests
take (a test run and the bench would otherwise share the catalogue's topics):
``flock /tmp/vi-platform-tests.lock python -m bench.pipeline [--minutes 60]``.

Two modes, each measured ``--repeat`` times; a run is P then N, back to back, so each
run's ratio compares the two under the same load (N is measured once per run):

One long video (default): a generated 720p talk (espeak-ng speech over lavfi scenes
with known cuts, built once and cached under the state dir, see ``bench.looped_talk``).
Short clips (``--clips N --clip-seconds S``): N clips cut from a five-minute talk of the
same kind, all submitted at once by a few customers.

P. the platform as ``make up`` runs it: the gateway, the stage workers (both branches
   after ingest: ``preprocess`` and ``scenes``), the cost aggregator, with the offline
   defaults (faster-whisper tiny.en, local/extractive) and ``--workers`` replicas of
   each heavy stage (preprocess, scenes, transcribe; ``VI_STAGE_REPLICAS``). The bench
   starts whichever of these processes is not running and stops only those afterwards.
   Fresh customers upload the media (not timed) and submit the jobs as any customer
   would. Wall time runs from the first job's creation to the last one's completion,
   both stamped by PostgreSQL (``jobs.created_at``, ``jobs.completed_at``); the first
   transcribed chunk is the job's earliest ``chunk_transcripts.created_at``, the start
   of the transaction that stored it (a redelivery keeps the first stamp), so both are
   exact to the database's clock. CPU time is, per process and summed by service, the
   /proc/<pid>/stat times of the process tree the stack started (supervisor, worker,
   FFmpeg children; children that exited through cutime/cstime) before and after.
   Peak memory is each tree's VmHWM (/proc/<pid>/status), reset through
   /proc/<pid>/clear_refs when the run begins and sampled every half second, summed over
   the tree's processes alive at a sample, the maximum over samples and over a service's
   replicas: an upper bound of one replica's resident peak (children that live less
   than half a second may be missed);
N. the naive script, in one process of its own, each video in turn: FFmpeg audio
   extraction to 16 kHz mono WAV, PySceneDetect's ContentDetector, then faster-whisper
   with its default settings on the same tiny.en model (loaded once per process); its
   CPU time is the child's rusage.

Targets (long video): P at least 20x real time and at least 2.5x N's speed in every
run, printed PASS or MISS (a short video pays a job's fixed costs, such as group
hand-offs and model loading, over fewer minutes: only ``--minutes 60`` answers them).
The first run after the bench started the workers also pays their model loading. The
bench always exits 0. Its customers and jobs stay in the database (customers are unique
per run); uploads and audio chunks are deleted from the blob store unless
``--keep-blobs`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.looped_talk import LoopedTalk, build_clips, build_looped_talk
from bench.media import f1, pyscenedetect_cuts, timed, verdict
from sinks.blobs import BlobStore
from sinks.customers import create_customer
from sinks.db import connect
from topics.admin import admin_client
from vidinsight.settings import REPO_ROOT, Settings

X_REAL_TIME_TARGET = 20.0
SPEED_RATIO_TARGET = 2.5
PREDICTED_CORES = 8
HEAVY_STAGES = ("preprocess", "scenes", "transcribe")
STACK = REPO_ROOT / "deploy" / "local" / "stack.sh"
INFRASTRUCTURE = ("postgres", "kafka", "registry")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0))
POLL_SECONDS = 0.25
SAMPLE_SECONDS = 0.5
FINISHED = ("completed", "failed", "cancelled")
JOBS_PER_CUSTOMER = 50  # well under the gateway's per-customer quota of jobs in flight
MIB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    """Wall and CPU seconds of one way of processing the media."""

    wall_seconds: float
    cpu_seconds: float


# -- CPU time and memory from /proc --------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    """Every live process whose parent is ``pid`` (all threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    return [pid, *(p for child in _children(pid) for p in process_tree(child))]


def own_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime: the process and its children that exited and were
    waited for (an FFmpeg a worker ran), or 0 when it is gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, living or exited and waited for."""
    return sum(own_cpu_seconds(p) for p in process_tree(pid))


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of the process (its peak resident set), or 0 when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    found = [line.split()[1] for line in lines if line.startswith("VmHWM:")]
    return int(found[0]) * 1024 if found else 0


def reset_peak_rss(pid: int) -> bool:
    """Make the process's VmHWM its current RSS (clear_refs 5 touches nothing else), so a
    peak is the run's, not a previous job's; False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def service_pids(settings: Settings, services: Sequence[str]) -> dict[str, int]:
    """The pid of each running service, from the stack's pid files (pid and start time)."""
    pids: dict[str, int] = {}
    for service in services:
        try:
            pid_text, started = (settings.state_dir / "run" / f"{service}.pid").read_text().split()
        except (OSError, ValueError):
            continue
        fields = _stat_fields(int(pid_text))
        if fields is not None and fields[19] == started:  # the process the stack started
            pids[service] = int(pid_text)
    return pids


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each service's process tree; a service whose process is gone is
    left out, so a crash shows as a warning, not as negative CPU time."""
    return {
        service: tree_cpu_seconds(pid)
        for service, pid in pids.items()
        if _stat_fields(pid) is not None
    }


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {service: after[service] - before[service] for service in after if service in before}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def service_of(process: str) -> str:
    """The service a process belongs to: ``worker-transcribe-2`` is a ``worker-transcribe``."""
    name, _, suffix = process.rpartition("-")
    return name if process.startswith("worker-") and suffix.isdigit() else process


@dataclass(frozen=True)
class Usage:
    """What the platform's processes used over one run, with the machine around them."""

    cpu: dict[str, float]  # CPU seconds by process (worker-transcribe-2)
    peak_bytes: dict[str, int]  # peak resident bytes by process tree
    peaks_reset: bool
    infrastructure_cpu_seconds: float
    machine_busy_seconds: float

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def cpu_by_service(self) -> dict[str, float]:
        summed: dict[str, float] = {}
        for process, seconds in self.cpu.items():
            summed[service_of(process)] = summed.get(service_of(process), 0.0) + seconds
        return summed

    def peak_by_service(self) -> dict[str, int]:
        """The largest replica's peak: what one process of the service must be given."""
        peaks: dict[str, int] = {}
        for process, peak in self.peak_bytes.items():
            peaks[service_of(process)] = max(peaks.get(service_of(process), 0), peak)
        return peaks


class Meter:
    """CPU of the platform's processes (and the infrastructure's, and the machine's) from
    its creation to ``stop``, and their peak memory, sampled by a thread in between."""

    def __init__(self, pids: Mapping[str, int], infra: Mapping[str, int]) -> None:
        self._pids, self._infra = dict(pids), dict(infra)
        self._peaks: dict[str, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_done, daemon=True)
        self._reset = all(reset_peak_rss(p) for pid in pids.values() for p in process_tree(pid))
        self._cpu, self._infra_cpu, self._machine = (
            cpu_snapshot(self._pids),
            cpu_snapshot(self._infra),
            machine_busy_seconds(),
        )
        self._thread.start()

    def _sample(self) -> None:
        for process, pid in self._pids.items():
            resident = sum(peak_rss_bytes(p) for p in process_tree(pid))
            self._peaks[process] = max(self._peaks.get(process, 0), resident)

    def _sample_until_done(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> Usage:
        self._done.set()
        self._thread.join()
        self._sample()
        return Usage(
            cpu=cpu_delta(self._cpu, cpu_snapshot(self._pids)),
            peak_bytes=self._peaks,
            peaks_reset=self._reset,
            infrastructure_cpu_seconds=sum(
                cpu_delta(self._infra_cpu, cpu_snapshot(self._infra)).values()
            ),
            machine_busy_seconds=machine_busy_seconds() - self._machine,
        )


# -- the stack -----------------------------------------------------------------------------


def stage_replicas(configured: str, workers: int) -> str:
    """``VI_STAGE_REPLICAS`` with ``workers`` for each heavy stage, other entries kept."""
    entries = dict(e.partition("=")[::2] for e in configured.replace(" ", "").split(",") if e)
    entries.update({stage: str(workers) for stage in HEAVY_STAGES})
    return ",".join(f"{stage}={count}" for stage, count in entries.items())


@dataclass(frozen=True)
class Stack:
    """stack.sh with this run's replicas: every call must name the same services."""

    env: dict[str, str]

    @classmethod
    def with_workers(cls, workers: int) -> Stack:
        env = dict(os.environ)
        env["VI_STAGE_REPLICAS"] = stage_replicas(env.get("VI_STAGE_REPLICAS", ""), workers)
        return cls(env)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), *args], cwd=REPO_ROOT, env=self.env,
            capture_output=True, text=True, check=check,
        )  # fmt: skip

    def platform_services(self) -> list[str]:
        """The pipeline's processes under ``make up``, in start order: the gateway, the
        stage workers with their replicas and the cost aggregator (monitoring such as
        Prometheus is left alone)."""
        listed = self.run("services", check=False)
        if listed.returncode != 0:
            raise SystemExit(f"stack.sh services failed:\n{listed.stderr}")
        names = listed.stdout.split()
        return [s for s in names if s in ("gateway", "costs") or s.startswith("worker-")]

    def start_missing(self, services: Sequence[str]) -> list[str]:
        """Start each service that is not healthy; the ones this run started, in order."""
        started: list[str] = []
        for service in services:
            if self.run("status", service, check=False).returncode == 0:
                continue
            print(f"  starting {service} ...", flush=True)
            done = self.run("start", service, check=False)
            if done.returncode != 0:
                self.stop_started(started)
                raise SystemExit(f"stack.sh start {service} failed:\n{done.stdout}{done.stderr}")
            started.append(service)
        return started

    def stop_started(self, started: Sequence[str]) -> None:
        """Stop what this run started, in reverse order; the rest of the stack is left alone."""
        for service in reversed(started):
            self.run("stop", service, check=False)


def stage_groups(services: Sequence[str]) -> dict[str, int]:
    """Each stage worker's consumer group (``vi.<stage>``) and how many of ``services``
    should be its members."""
    groups: dict[str, int] = {}
    for service in map(service_of, services):
        if service.startswith("worker-"):
            group = f"vi.{service.removeprefix('worker-')}"
            groups[group] = groups.get(group, 0) + 1
    return groups


def group_members(settings: Settings, groups: Sequence[str]) -> dict[str, list[int]]:
    """Each group's members, as the number of partitions assigned to each."""
    admin = admin_client(settings.kafka_bootstrap)
    described = admin.describe_consumer_groups(list(groups), request_timeout=10)
    return {
        group: [len(m.assignment.topic_partitions) for m in future.result().members]
        for group, future in described.items()
    }


def wait_for_assignments(settings: Settings, groups: Mapping[str, int], timeout: float) -> None:
    """Wait until every stage group has its expected members, each assigned partitions;
    warn about groups that differ.

    A job submitted while a freshly started worker is still joining would time the
    join, and a member that is not ours (another engineer's worker, a test) would do
    part of the job out of sight of the CPU accounting.
    """

    def settled(members: Mapping[str, list[int]]) -> bool:
        return all(len(members[g]) == n and min(members[g]) > 0 for g, n in groups.items())

    deadline = time.monotonic() + timeout
    members = group_members(settings, list(groups))
    while time.monotonic() < deadline and not settled(members):
        time.sleep(1)
        members = group_members(settings, list(groups))
    odd = {g: m for g, m in members.items() if len(m) != groups[g] or 0 in m}
    if odd:
        print(f"  WARNING: groups not as this stack runs them (partitions per member): {odd};"
              " idle members (more than partitions) or foreign ones (the figures are"
              " then not of this stack alone)")  # fmt: skip


# -- the customer's side -------------------------------------------------------------------


def new_customer(settings: Settings) -> tuple[str, str]:
    """A customer of this run only: ``(customer_id, api_key)``."""
    with connect(settings) as conn, conn.transaction():
        return create_customer(conn, f"bench-pipeline-{uuid.uuid4().hex[:8]}")


@dataclass
class Customer:
    """A customer of this run with its HTTP client to the gateway."""

    customer_id: str
    client: httpx.Client
    job_ids: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, settings: Settings) -> Customer:
        customer_id, api_key = new_customer(settings)
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{settings.gateway_port}",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        return cls(customer_id, client)

    def upload(self, video: Path) -> str:
        """POST the file as the raw body, streamed; the upload id."""
        with video.open("rb") as body:
            answer = self.client.post(
                "/v1/uploads", content=body, headers={"Content-Type": "video/mp4"}, timeout=600
            )
        answer.raise_for_status()
        return str(answer.json()["upload_id"])

    def submit(self, upload_id: str) -> str:
        answer = self.client.post("/v1/jobs", json={"upload_id": upload_id}, timeout=30)
        answer.raise_for_status()
        self.job_ids.append(str(answer.json()["job_id"]))
        return self.job_ids[-1]


def follow(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job until it ends, printing each change of a stage; its last view."""
    last = ""
    began = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", timeout=30).json()
        line = " ".join(f"{name}:{stage['status']}" for name, stage in view["stages"].items())
        if line != last:
            print(f"  {time.perf_counter() - began:7.1f} s  {view['status']:9} {line}", flush=True)
            last = line
        if view["status"] in FINISHED or time.monotonic() > deadline:
            return view
        time.sleep(POLL_SECONDS)


def wait_for_jobs(settings: Settings, job_ids: Sequence[str], timeout: float) -> None:
    """Wait until every job has ended, reading their status from PostgreSQL: polling
    dozens of jobs through the gateway would bill the bench's reads to the platform."""
    deadline, began, printed = time.monotonic() + timeout, time.perf_counter(), -1.0
    while time.monotonic() < deadline:
        with connect(settings) as conn:
            ended = conn.execute(
                "SELECT count(*) AS n FROM jobs WHERE job_id = ANY(%s) AND status = ANY(%s)",
                (list(job_ids), list(FINISHED)),
            ).fetchone()
        done = int(ended["n"]) if ended else 0
        elapsed = time.perf_counter() - began
        if done == len(job_ids) or elapsed - printed >= 10:
            print(f"  {elapsed:7.1f} s  {done}/{len(job_ids)} jobs ended", flush=True)
            printed = elapsed
        if done == len(job_ids):
            return
        time.sleep(POLL_SECONDS * 2)


def job_costs(client: httpx.Client, job_id: str, settle_seconds: float = 3.0) -> dict[str, Any]:
    """The job's cost by stage, once the aggregator has stopped adding to it.

    Costs reach the ledger through the aggregator a moment after the stage that
    caused them, so the answer is taken when it has not changed for ``settle_seconds``.
    """
    previous: dict[str, Any] = {}
    stable_since = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        costs: dict[str, Any] = client.get(f"/v1/jobs/{job_id}/costs", timeout=30).json()
        if costs.get("total_usd_micros") != previous.get("total_usd_micros"):
            previous, stable_since = costs, time.monotonic()
        elif time.monotonic() - stable_since >= settle_seconds:
            break
        time.sleep(0.5)
    return previous


# -- where the time went -------------------------------------------------------------------


@dataclass(frozen=True)
class JobTimes:
    """A job's end, from PostgreSQL's stamps: seconds after its creation."""

    job_id: str
    status: str
    created: float  # seconds since the epoch
    seconds: float  # creation to completion (or last update, when it did not complete)
    first_chunk_seconds: float | None


def job_times(settings: Settings, job_ids: Sequence[str]) -> list[JobTimes]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT j.job_id, j.status, extract(epoch FROM j.created_at) AS created,"
            " extract(epoch FROM coalesce(j.completed_at, j.updated_at) - j.created_at) AS s,"
            " extract(epoch FROM (SELECT min(c.created_at) FROM chunk_transcripts c"
            "   WHERE c.job_id = j.job_id) - j.created_at) AS first_chunk"
            " FROM jobs j WHERE j.job_id = ANY(%s)",
            (list(job_ids),),
        ).fetchall()
    return [
        JobTimes(
            str(row["job_id"]), str(row["status"]), float(row["created"]), float(row["s"]),
            None if row["first_chunk"] is None else float(row["first_chunk"]),
        )
        for row in rows
    ]  # fmt: skip


def batch_wall_seconds(jobs: Sequence[JobTimes]) -> float:
    """From the first job's creation to the last one's end."""
    return max(j.created + j.seconds for j in jobs) - min(j.created for j in jobs)


@dataclass(frozen=True)
class StageRun:
    """One row of stage_runs, timed from the job's creation."""

    stage: str
    key: tuple[int, ...]  # (segment,) or (segment, chunk); () for a stage run once per job
    attempts: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def stage_runs(settings: Settings, job_id: str) -> list[StageRun]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT r.stage, r.run_key, r.attempts,"
            " extract(epoch FROM r.started_at - j.created_at) AS start_s,"
            " extract(epoch FROM r.finished_at - j.created_at) AS end_s"
            " FROM stage_runs r JOIN jobs j USING (job_id)"
            " WHERE r.job_id = %s AND r.finished_at IS NOT NULL ORDER BY r.started_at",
            (job_id,),
        ).fetchall()
    runs: list[StageRun] = []
    for row in rows:
        parts = str(row["run_key"]).removeprefix(job_id).split(":")
        key = tuple(int(p) for p in parts if p.isdigit())
        start = float(row["start_s"] or 0)
        runs.append(StageRun(str(row["stage"]), key, int(row["attempts"]), start,
                             float(row["end_s"] or start)))  # fmt: skip
    return runs


@dataclass(frozen=True)
class StageSpan:
    """One stage of the job: its runs, when the first began and the last ended, busy time."""

    stage: str
    runs: int
    attempts: int
    start_seconds: float
    end_seconds: float
    busy_seconds: float


def stage_spans(runs: Sequence[StageRun]) -> list[StageSpan]:
    """Each stage's runs, in the order the stages first started."""
    stages = list(dict.fromkeys(run.stage for run in runs))
    spans = []
    for stage in stages:
        mine = [run for run in runs if run.stage == stage]
        spans.append(StageSpan(stage, len(mine), max(r.attempts for r in mine),
                               min(r.start for r in mine), max(r.end for r in mine),
                               sum(r.seconds for r in mine)))  # fmt: skip
    return spans


def chain_seconds(runs: Sequence[StageRun]) -> float:
    """The longest chain of runs that each wait for the one before, hand-offs left out:
    what the job would take with a worker free for every message at once.

    The once-per-job stages (ingest, analyse, synthesise, notify) follow one another;
    between them each segment's two branches run side by side: its audio cut, then the
    slowest of its chunks' transcriptions, next to its scene search.
    """
    once: dict[str, float] = {}
    segments: dict[tuple[int, ...], dict[str, float]] = {}
    for run in runs:
        longest = segments.setdefault(run.key[:1], {}) if run.stage in HEAVY_STAGES else once
        longest[run.stage] = max(longest.get(run.stage, 0.0), run.seconds)
    branches = [
        max(s.get("preprocess", 0.0) + s.get("transcribe", 0.0), s.get("scenes", 0.0))
        for s in segments.values()
    ]
    return sum(once.values()) + max(branches, default=0.0)


def transcript_words(settings: Settings, job_id: str) -> int:
    """Words the platform transcribed for the job (all chunks)."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT text FROM chunk_transcripts WHERE job_id = %s", (job_id,)
        ).fetchall()
    return sum(len(str(row["text"]).split()) for row in rows)


def platform_cuts(settings: Settings, job_id: str) -> list[float]:
    """The scene cuts the platform found: the start of every scene that opens with one.

    A scene crossing a segment border is stored as two pieces, the later one not
    opening with a cut (``sinks.scenes`` joins them when read)."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT start_seconds FROM scenes WHERE job_id = %s AND opens_with_cut"
            " ORDER BY start_seconds",
            (job_id,),
        ).fetchall()
    return [float(row["start_seconds"]) for row in rows[1:]]


def delete_blobs(settings: Settings, customers: Sequence[Customer]) -> None:
    """Remove the run's large blobs (the uploads, the audio chunks); keyframes stay."""
    store = BlobStore.from_settings(settings)
    if not store.is_local:
        return
    for customer in customers:
        keys = [f"uploads/{customer.customer_id}", *(f"audio/{j}" for j in customer.job_ids)]
        for key in keys:
            shutil.rmtree(store.local_file(store.uri(key)), ignore_errors=True)


# -- P: the platform -----------------------------------------------------------------------


@dataclass(frozen=True)
class JobDetail:
    """What the long video's job produced, and where its time went."""

    upload: Measured
    runs: list[StageRun]
    costs: dict[str, Any]
    words: int
    cuts: list[float]


@dataclass(frozen=True)
class PlatformRun:
    """One run of the platform: its jobs, its wall time and what its processes used."""

    jobs: list[JobTimes]
    usage: Usage
    detail: JobDetail | None = None

    @property
    def wall_seconds(self) -> float:
        return batch_wall_seconds(self.jobs)

    @property
    def completed(self) -> int:
        return sum(job.status == "completed" for job in self.jobs)

    @property
    def first_chunk_seconds(self) -> float:
        found = [j.first_chunk_seconds for j in self.jobs if j.first_chunk_seconds is not None]
        return statistics.median(found) if found else math.nan


@dataclass(frozen=True)
class Platform:
    """The running platform: its processes' pids and the infrastructure's."""

    settings: Settings
    services: list[str]

    def meter(self) -> Meter:
        return Meter(service_pids(self.settings, self.services),
                     service_pids(self.settings, INFRASTRUCTURE))  # fmt: skip

    def check_still_up(self) -> None:
        wait_for_assignments(self.settings, stage_groups(self.services), timeout=0)
        down = sorted(set(self.services) - set(service_pids(self.settings, self.services)))
        if down:
            print(f"  WARNING: not running at the end of the run: {down} (see their logs)")


def run_long(platform: Platform, talk: LoopedTalk, keep_blobs: bool) -> PlatformRun:
    """Upload, submit and follow one job as a customer."""
    settings = platform.settings
    customer = Customer.new(settings)
    with customer.client:
        meter, began = platform.meter(), time.perf_counter()
        upload_id = customer.upload(talk.video)
        upload = Measured(time.perf_counter() - began, meter.stop().cpu_seconds)
        meter = platform.meter()
        job_id = customer.submit(upload_id)
        print(f"  job {job_id} submitted ({upload.wall_seconds:.1f} s upload)", flush=True)
        view = follow(customer.client, job_id, timeout=300 + 2 * talk.seconds)
        usage = meter.stop()
        costs = job_costs(customer.client, job_id) if view["status"] == "completed" else {}
    platform.check_still_up()
    words, cuts = transcript_words(settings, job_id), platform_cuts(settings, job_id)
    detail = JobDetail(upload, stage_runs(settings, job_id), costs, words, cuts)
    if not keep_blobs:
        delete_blobs(settings, [customer])
    return PlatformRun(job_times(settings, [job_id]), usage, detail)


def run_clips(platform: Platform, clips: Sequence[Path], keep_blobs: bool) -> PlatformRun:
    """Upload every clip (not timed), then submit them all at once, customers in turn."""
    settings = platform.settings
    count = max(min(len(clips), 4), math.ceil(len(clips) / JOBS_PER_CUSTOMER))
    customers = [Customer.new(settings) for _ in range(count)]
    try:
        turns = [customers[i % count] for i in range(len(clips))]
        uploads = [
            (customer, customer.upload(clip)) for customer, clip in zip(turns, clips, strict=True)
        ]
        meter = platform.meter()
        for customer, upload_id in uploads:
            customer.submit(upload_id)
        job_ids = [job for customer in customers for job in customer.job_ids]
        print(f"  {len(job_ids)} jobs submitted by {count} customers", flush=True)
        wait_for_jobs(settings, job_ids, timeout=600 + 10 * len(clips))
        usage = meter.stop()
    finally:
        for customer in customers:
            customer.client.close()
    platform.check_still_up()
    if not keep_blobs:
        delete_blobs(settings, customers)
    return PlatformRun(job_times(settings, job_ids), usage)


# -- N: the naive script -------------------------------------------------------------------


def whisper_text(model: Any, wav: Path) -> str:
    return " ".join(segment.text for segment in model.transcribe(str(wav))[0])


def naive_script(videos: Sequence[Path], folder: Path) -> dict[str, Any]:
    """The script the platform replaces: for each video three steps, one after the other,
    in one process, which loads the model once."""
    from faster_whisper import WhisperModel

    from inference.transcriber_whisper import default_model_dir
    from media.tools import run_ffmpeg

    steps = dict.fromkeys(["model load", "ffmpeg audio", "ContentDetector", "faster-whisper"], 0.0)
    steps["model load"], model = timed(
        partial(WhisperModel, str(default_model_dir()), device="cpu")
    )
    results: list[dict[str, Any]] = []
    wav = folder / "audio.wav"
    for video in videos:
        extract = ["-i", str(video), "-vn", "-ac", "1", "-ar", "16000", str(wav)]
        steps["ffmpeg audio"] += timed(partial(run_ffmpeg, extract))[0]
        seconds, cuts = timed(partial(pyscenedetect_cuts, video))
        steps["ContentDetector"] += seconds
        seconds, text = timed(partial(whisper_text, model, wav))
        steps["faster-whisper"] += seconds
        results.append({"cuts": cuts, "words": len(text.split())})
    return {"steps": steps, "videos": results}


@dataclass(frozen=True)
class NaiveRun:
    measured: Measured
    steps: dict[str, float]
    videos: list[dict[str, Any]]
    machine_busy_seconds: float


def run_naive(videos: Sequence[Path]) -> NaiveRun:
    """The naive script in a child process: its wall time, and CPU time from its rusage."""
    command = [sys.executable, "-m", "bench.pipeline", "--naive-only", *map(str, videos)]
    usage_before, machine_before = (
        resource.getrusage(resource.RUSAGE_CHILDREN),
        machine_busy_seconds(),
    )
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    usage, machine_after = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds()
    if done.returncode != 0:
        raise SystemExit(f"the naive script failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    return NaiveRun(
        Measured(wall, cpu), result["steps"], result["videos"], machine_after - machine_before
    )


# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One run: the platform, then the naive script on the same media (None: skipped)."""

    platform: PlatformRun
    naive: NaiveRun | None


@dataclass(frozen=True)
class Column:
    """One figure of every run, printed per run and, over several runs, as their spread."""

    header: str
    values: list[float]
    digits: int = 1

    def cell(self, value: float) -> str:
        width = max(9, len(self.header) + 2)
        return f"{value:>{width}.{self.digits}f}"


def print_runs(columns: Sequence[Column], notes: Sequence[str]) -> None:
    """A row per run (with its note), then min/median/max when there are several."""
    print(f"{'run':<7}" + "".join(f"{c.header:>{max(9, len(c.header) + 2)}}" for c in columns))
    for index, note in enumerate(notes):
        print(f"{index + 1:<7}" + "".join(c.cell(c.values[index]) for c in columns) + note)
    if len(notes) < 2:
        return
    picks: list[tuple[str, Callable[[list[float]], float]]] = [
        ("min", min),
        ("median", statistics.median),
        ("max", max),
    ]
    for label, pick in picks:
        cells = []
        for column in columns:
            known = [v for v in column.values if not math.isnan(v)]
            cells.append(column.cell(pick(known) if known else math.nan))
        print(f"{label:<7}" + "".join(cells))


def knobs(settings: Settings, workers: int) -> str:
    return (
        f"{workers} worker(s) per heavy stage ({', '.join(HEAVY_STAGES)}); {CORES} cores;"
        f" segment_seconds={settings.segment_seconds:g} chunk_seconds={settings.chunk_seconds:g}"
        f" worker_threads={settings.worker_threads} topic_partitions={settings.topic_partitions};"
        f" whisper: batch {settings.whisper_batch_size}, beam {settings.whisper_beam_size},"
        f" {settings.whisper_cpu_threads} threads, {settings.whisper_compute_type}"
    )


def report_services(trials: Sequence[Trial], unit: str, per_run: Sequence[float]) -> None:
    """CPU seconds by service (spread over the runs, and per ``unit``) and peak memory."""
    usages = [trial.platform.usage for trial in trials]
    by_service = [usage.cpu_by_service() for usage in usages]
    services = sorted(
        {s for cpu in by_service for s in cpu}, key=lambda s: -by_service[0].get(s, 0)
    )
    replicas = {s: sum(service_of(p) == s for p in usages[0].cpu) for s in services}
    print(f"{'by service':<22}{'procs':>6}{'CPU s median':>14}{'min-max':>16}"
          f"{'CPU s/' + unit:>16}{'peak MiB':>10}")  # fmt: skip
    rows: list[tuple[str, str, list[float], int | None]] = [
        (s, str(replicas[s]), [cpu.get(s, 0.0) for cpu in by_service],
         max(u.peak_by_service().get(s, 0) for u in usages))
        for s in services
    ]  # fmt: skip
    rows.append(("platform (P)", "", [u.cpu_seconds for u in usages], None))
    rows.append(("infrastructure*", "", [u.infrastructure_cpu_seconds for u in usages], None))
    rest = [u.machine_busy_seconds - u.cpu_seconds - u.infrastructure_cpu_seconds for u in usages]
    rows.append(("rest of machine*", "", rest, None))
    for name, procs, values, peak in rows:
        spread = f"{min(values):.1f}-{max(values):.1f}"
        per_unit = statistics.median(v / d for v, d in zip(values, per_run, strict=True))
        memory = "" if peak is None else f"{peak / MIB:.0f}"
        print(f"{name:<22}{procs:>6}{statistics.median(values):>14.1f}{spread:>16}"
              f"{per_unit:>16.2f}{memory:>10}")  # fmt: skip
    walls = [trial.platform.wall_seconds for trial in trials]
    reset = all(u.peaks_reset for u in usages)
    since = "this run alone" if reset else "since it started (could not reset VmHWM)"
    print(f"  * shared, not in P; the machine had {CORES} x {statistics.median(walls):.0f} s"
          f" = {CORES * statistics.median(walls):.0f} CPU s (median run). Peak: the largest"
          f" replica's process tree, {since}")  # fmt: skip


def report_bounds(trials: Sequence[Trial], seconds: float) -> None:
    """What bounds one video: the CPU the job needs over the cores, or its chain of runs."""
    cpu = statistics.median(t.platform.usage.cpu_seconds for t in trials)
    chain = statistics.median(chain_seconds(t.platform.detail.runs) for t in trials
                              if t.platform.detail)  # fmt: skip
    wall = statistics.median(t.platform.wall_seconds for t in trials)
    here = cpu / CORES
    binding = "CPU" if here >= chain else "the chain of runs"
    print(f"bounds (medians): CPU {cpu:.1f} s / {CORES} cores = {here:.1f} s; chain"
          f" {chain:.1f} s; wall {wall:.1f} s: bound here by {binding}")  # fmt: skip
    predicted = max(cpu / PREDICTED_CORES, chain)
    print(f"  on {PREDICTED_CORES} cores: max(CPU/{PREDICTED_CORES}, chain) = {predicted:.1f} s"
          f" = {seconds / predicted:.0f}x real time, bound by"
          f" {'CPU' if cpu / PREDICTED_CORES >= chain else 'the chain'}; an upper estimate:"
          f" the chain's runs were timed here, sharing {CORES} cores")  # fmt: skip
    print(
        "  chain: ingest + the slowest segment (its audio cut + its slowest chunk, or its"
        " scenes) + analyse + synthesise + notify, without hand-offs"
    )


def report_last_job(detail: JobDetail, talk: LoopedTalk) -> None:
    upload = detail.upload
    print(f"last run: upload through the gateway (before the job; not in P):"
          f" {upload.wall_seconds:.1f} s wall, {upload.cpu_seconds:.1f} CPU s")  # fmt: skip
    print(f"  {'stage':<12}{'runs':>6}{'tries':>6}{'first start':>13}{'last end':>10}"
          f"{'busy s':>9}{'busy/span':>10}")  # fmt: skip
    for span in stage_spans(detail.runs):
        length = max(1e-6, span.end_seconds - span.start_seconds)
        print(f"  {span.stage:<12}{span.runs:>6}{span.attempts:>6}{span.start_seconds:>12.1f}s"
              f"{span.end_seconds:>9.1f}s{span.busy_seconds:>9.1f}"
              f"{span.busy_seconds / length:>10.2f}")  # fmt: skip
    print(f"  words transcribed {detail.words}; scene cuts F1 {f1(detail.cuts, talk.cuts):.3f}")
    by_stage = detail.costs.get("by_stage", {})
    if not by_stage:
        print("  no costs recorded for the job (is the costs service running? see its log)")
        return
    total = float(detail.costs.get("total_usd", 0.0))
    parts = ", ".join(f"{stage} {usd:.6f}" for stage, usd in by_stage.items())
    per_hour = total * 3600 / talk.seconds
    print(f"  cost by stage (USD): {parts}; total {total:.6f} = {per_hour:.4f} per video-hour")


def report_long(talk: LoopedTalk, trials: Sequence[Trial]) -> None:
    seconds = talk.seconds
    print()
    print(f"vidinsight pipeline benchmark  ({seconds / 60:g}-minute 720p talk,"
          f" {len(talk.cuts)} cuts, {len(trials)} run(s))")  # fmt: skip
    print("-" * 90)
    platform = [t.platform for t in trials]
    walls = [p.wall_seconds for p in platform]
    columns = [
        Column("P wall s", walls),
        Column("x real", [seconds / w for w in walls]),
        Column("1st chunk s", [p.first_chunk_seconds for p in platform]),
        Column(
            "chain s", [chain_seconds(p.detail.runs) if p.detail else math.nan for p in platform]
        ),
        Column("P CPU s", [p.usage.cpu_seconds for p in platform]),
    ]
    naive = [t.naive for t in trials if t.naive is not None]
    notes = [f"  {p.jobs[0].status}" for p in platform]
    ratios = [t.naive.measured.wall_seconds / t.platform.wall_seconds
              for t in trials if t.naive is not None]  # fmt: skip
    if naive:
        columns += [
            Column("N wall s", [n.measured.wall_seconds for n in naive]),
            Column("N CPU s", [n.measured.cpu_seconds for n in naive]),
            Column("N/P", ratios, 2),
        ]
        notes = [f"{note} {verdict(r >= SPEED_RATIO_TARGET)}"
                 for note, r in zip(notes, ratios, strict=True)]  # fmt: skip
    print_runs(columns, notes)
    print("-" * 90)
    ok = all(p.completed == 1 for p in platform)
    x_real = [seconds / w for w in walls]
    print(f"P x real time: median {statistics.median(x_real):.1f} (min {min(x_real):.1f})"
          f"   target >= {X_REAL_TIME_TARGET:.0f} in every run"
          f"   {verdict(ok and min(x_real) >= X_REAL_TIME_TARGET)}")  # fmt: skip
    if naive:
        print(f"N wall / P wall, each run against its own N: median {statistics.median(ratios):.2f}"
              f" (min {min(ratios):.2f}, max {max(ratios):.2f})   target >= {SPEED_RATIO_TARGET}"
              f" in every run   {verdict(ok and min(ratios) >= SPEED_RATIO_TARGET)}")  # fmt: skip
        steps = ", ".join(f"{name} {s:.1f} s" for name, s in naive[-1].steps.items())
        result = naive[-1].videos[0]
        print(f"  N steps (last run): {steps}; words {result['words']};"
              f" scene cuts F1 {f1(result['cuts'], talk.cuts):.3f}")  # fmt: skip
    print(
        "  1st chunk: the job's creation to its first chunk_transcripts row (PostgreSQL's"
        " clock); P wall likewise to jobs.completed_at"
    )
    print("-" * 90)
    report_services(trials, "video-min", [seconds / 60] * len(trials))
    print("-" * 90)
    report_bounds(trials, seconds)
    print("-" * 90)
    last = platform[-1].detail
    if last is not None:
        report_last_job(last, talk)


def report_clips(count: int, clip_seconds: float, trials: Sequence[Trial]) -> None:
    print()
    print(f"vidinsight short-clip benchmark  ({count} clips of {clip_seconds:g} s, 720p,"
          f" submitted at once; {len(trials)} run(s))")  # fmt: skip
    print("-" * 100)
    platform = [t.platform for t in trials]
    done = [max(1, p.completed) for p in platform]
    jobs_per_minute = [d * 60 / p.wall_seconds for d, p in zip(done, platform, strict=True)]
    columns = [
        Column("P wall s", [p.wall_seconds for p in platform]),
        Column("P jobs/min", jobs_per_minute),
        Column(
            "P CPU s/job", [p.usage.cpu_seconds / d for d, p in zip(done, platform, strict=True)], 2
        ),
        Column("job s median", [statistics.median(j.seconds for j in p.jobs) for p in platform]),
        Column("1st chunk s", [p.first_chunk_seconds for p in platform]),
    ]
    naive = [t.naive for t in trials if t.naive is not None]
    if naive:
        naive_per_minute = [count * 60 / n.measured.wall_seconds for n in naive]
        columns += [
            Column("N wall s", [n.measured.wall_seconds for n in naive]),
            Column("N jobs/min", naive_per_minute),
            Column("N CPU s/job", [n.measured.cpu_seconds / count for n in naive], 2),
            Column(
                "P/N jobs/min",
                [p / n for p, n in zip(jobs_per_minute, naive_per_minute, strict=True)],
                2,
            ),
        ]
    print_runs(columns, [f"  {p.completed}/{len(p.jobs)} completed" for p in platform])
    print(
        "  job s, 1st chunk s: medians over the run's jobs, from each job's creation"
        " (PostgreSQL's clock); P wall: first creation to last completion"
    )
    if naive:
        steps = ", ".join(f"{name} {s:.1f} s" for name, s in naive[-1].steps.items())
        print(f"  N steps (last run, all clips): {steps}")
    print("-" * 100)
    report_services(trials, "job", done)


# -- the command ---------------------------------------------------------------------------


def measure(
    platform: Platform,
    repeat: int,
    run_platform: Callable[[], PlatformRun],
    naive_videos: Sequence[Path] | None,
) -> list[Trial]:
    """``repeat`` runs of P then N (N left out when ``naive_videos`` is None)."""
    trials = []
    for index in range(repeat):
        print(f"run {index + 1}/{repeat}: P, the platform", flush=True)
        result = run_platform()
        naive = None
        if naive_videos is not None:
            print(f"run {index + 1}/{repeat}: N, the naive script ...", flush=True)
            naive = run_naive(naive_videos)
        trials.append(Trial(result, naive))
    return trials


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, default=60.0, help="video length (default 60)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="workers per heavy stage: preprocess, scenes, transcribe (default 1)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="runs, each P then N; with several, min/median/max (default 1)",
    )
    parser.add_argument(
        "--clips",
        type=int,
        metavar="N",
        help="short-clip mode: N clips at once instead of the long video",
    )
    parser.add_argument(
        "--clip-seconds",
        type=float,
        default=6.0,
        metavar="S",
        help="length of each clip (default 6)",
    )
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive script")
    parser.add_argument("--keep-blobs", action="store_true", help="keep uploads and chunks")
    parser.add_argument("--naive-only", metavar="VIDEO", type=Path, nargs="+",
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeat < 1 or (args.clips is not None and args.clips < 1):
        parser.error("--workers, --repeat and --clips take 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.naive_only is not None:  # the child process of run_naive
        with tempfile.TemporaryDirectory(prefix="bench-naive-") as folder:
            print(json.dumps(naive_script(args.naive_only, Path(folder))))
        return 0
    settings = Settings()
    root = settings.state_dir / "bench"
    if args.clips is not None:
        videos = build_clips(root, args.clips, args.clip_seconds)
        print(f"clips: {args.clips} of {args.clip_seconds:g} s under {videos[0].parent}")
    else:
        talk = build_looped_talk(root, args.minutes)
        videos = [talk.video]
        state = "cached; built" if talk.cached else "built"
        print(f"video: {talk.video} ({talk.seconds:g} s, {talk.video.stat().st_size / 1e6:.0f}"
              f" MB; {state} in {talk.generation_seconds:.0f} s)")  # fmt: skip
    print(f"settings: {knobs(settings, args.workers)}")
    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
    stack = Stack.with_workers(args.workers)
    platform = Platform(settings, stack.platform_services())
    started = stack.start_missing(platform.services)
    try:
        wait_for_assignments(settings, stage_groups(platform.services), timeout=90)
        if len(started) < len(platform.services):
            print("  (some services were already running: their settings may differ)")
        if args.clips is not None:
            trials = measure(platform, args.repeat,
                             lambda: run_clips(platform, videos, args.keep_blobs),
                             None if args.skip_naive else videos)  # fmt: skip
        else:
            trials = measure(platform, args.repeat,
                             lambda: run_long(platform, talk, args.keep_blobs),
                             None if args.skip_naive else videos)  # fmt: skip
    finally:
        stack.stop_started(started)
    if args.clips is not None:
        report_clips(args.clips, args.clip_seconds, trials)
    else:
        report_long(talk, trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
