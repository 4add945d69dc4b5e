"""How fast is the whole platform on a long video, next to the one-process script it replaces?

Run from the repo root with the stack's infrastructure up: ``python -m bench.pipeline
[--minutes 60]``. On a generated 720p talk (espeak-ng speech over lavfi scenes with
known cuts, built once and cached under the state dir, see ``bench.looped_talk``):

P. the platform as ``make up`` runs it (one ``vidinsight worker`` per stage, the cost
   aggregator and the gateway; the bench starts whichever of them is not running and
   stops only those afterwards), with the offline defaults (faster-whisper tiny.en,
   local/extractive). A fresh customer uploads the video to the gateway, submits the
   job and polls it until it completes, as any customer would. Wall time runs from
   the submission to the completed status; CPU time is the sum, over the platform's
   processes and their children, of /proc/<pid>/stat before and after;
N. the naive script, in one process of its own, one step after the other: FFmpeg
   audio extraction to 16 kHz mono WAV, PySceneDetect's ContentDetector, then
   faster-whisper with its default settings on the same tiny.en model; its CPU time
   is the child's rusage.

Targets on this 2-core machine: P at least 20x real time (an hour in at most 3
minutes) and at least 2x N's speed. Each is printed PASS or MISS (a short video pays
the fixed costs of a job, such as group hand-offs and model loading, over fewer
minutes, so only ``--minutes 60`` answers the target as stated). The bench always
exits 0. Its customer and job stay in the database (the customer is unique per run);
the uploaded video and the audio chunks are deleted from the blob store unless
``--keep-blobs`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.looped_talk import LoopedTalk, build_looped_talk
from bench.media import f1, pyscenedetect_cuts, verdict
from sinks.blobs import BlobStore
from sinks.customers import create_customer
from sinks.db import connect
from topics.admin import admin_client
from vidinsight.settings import REPO_ROOT, Settings

X_REAL_TIME_TARGET = 20.0
SPEED_RATIO_TARGET = 2.0
STACK = REPO_ROOT / "deploy" / "local" / "stack.sh"
INFRASTRUCTURE = ("postgres", "kafka", "registry")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.25
FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Measured:
    """Wall and CPU seconds of one way of processing the video."""

    wall_seconds: float
    cpu_seconds: float

    def x_real_time(self, video_seconds: float) -> float:
        return video_seconds / self.wall_seconds

    def cpu_per_video_minute(self, video_seconds: float) -> float:
        return self.cpu_seconds / (video_seconds / 60)


# -- CPU time from /proc -------------------------------------------------------------------


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


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, living or exited and waited for.

    utime + stime of each live process, plus cutime + cstime (children that exited),
    so FFmpeg runs of a worker and backends of PostgreSQL are counted too.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    own = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return own + sum(tree_cpu_seconds(child) for child in _children(pid))


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


# -- the stack -----------------------------------------------------------------------------


def stack(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), *args], cwd=REPO_ROOT, capture_output=True, text=True, check=check
    )


def platform_services() -> list[str]:
    """The pipeline's services under ``make up``, in start order: the gateway, one worker
    per stage and the cost aggregator (monitoring such as Prometheus is left alone)."""
    listed = stack("services").stdout.split()
    return [s for s in listed if s in ("gateway", "costs") or s.startswith("worker-")]


def start_missing(services: Sequence[str]) -> list[str]:
    """Start each service that is not healthy; the ones this run started, in order."""
    started: list[str] = []
    for service in services:
        if stack("status", service, check=False).returncode == 0:
            continue
        print(f"  starting {service} ...", flush=True)
        done = stack("start", service, check=False)
        if done.returncode != 0:
            stop_started(started)
            raise SystemExit(f"stack.sh start {service} failed:\n{done.stdout}{done.stderr}")
        started.append(service)
    return started


def stop_started(started: Sequence[str]) -> None:
    """Stop what this run started, in reverse order; the rest of the stack is left alone."""
    for service in reversed(started):
        stack("stop", service, check=False)


def stage_groups(services: Sequence[str]) -> list[str]:
    """The consumer group of each stage worker among ``services`` (``vi.<stage>``)."""
    return [
        f"vi.{service.removeprefix('worker-')}"
        for service in services
        if service.startswith("worker-")
    ]


def group_members(settings: Settings, groups: Sequence[str]) -> dict[str, list[int]]:
    """Each group's members, as the number of partitions assigned to each."""
    admin = admin_client(settings.kafka_bootstrap)
    described = admin.describe_consumer_groups(list(groups), request_timeout=10)
    return {
        group: [len(m.assignment.topic_partitions) for m in future.result().members]
        for group, future in described.items()
    }


def wait_for_assignments(settings: Settings, groups: Sequence[str], timeout: float = 90) -> None:
    """Wait until every stage group has partitions assigned; warn about foreign members.

    A job submitted while a freshly started worker is still joining would time the
    join, and a second member in a group (another engineer's worker, a test) would do
    part of the job out of sight of the CPU accounting.
    """
    deadline = time.monotonic() + timeout
    members = group_members(settings, groups)
    while time.monotonic() < deadline and not all(sum(m) > 0 for m in members.values()):
        time.sleep(1)
        members = group_members(settings, groups)
    crowded = {group: m for group, m in members.items() if len(m) != 1}
    if crowded:
        print(f"  WARNING: groups without exactly one member (partitions each): {crowded};"
              " the figures below are not of this stack alone")  # fmt: skip


# -- the customer's side -------------------------------------------------------------------


def new_customer(settings: Settings) -> tuple[str, str]:
    """A customer of this run only: ``(customer_id, api_key)``."""
    with connect(settings) as conn, conn.transaction():
        return create_customer(conn, f"bench-pipeline-{uuid.uuid4().hex[:8]}")


def upload(client: httpx.Client, video: Path) -> str:
    """POST the file as the raw body, streamed; the upload id."""
    with video.open("rb") as body:
        answer = client.post(
            "/v1/uploads", content=body, headers={"Content-Type": "video/mp4"}, timeout=600
        )
    answer.raise_for_status()
    return str(answer.json()["upload_id"])


def submit(client: httpx.Client, upload_id: str) -> str:
    answer = client.post("/v1/jobs", json={"upload_id": upload_id}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["job_id"])


def follow(client: httpx.Client, job_id: str, began: float, timeout: float) -> dict[str, Any]:
    """Poll the job until it ends, printing each change of a stage; its last view."""
    last = ""
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
class StageSpan:
    """One stage of the job: its runs, when the first began and the last ended, busy time."""

    stage: str
    runs: int
    attempts: int
    start_seconds: float
    end_seconds: float
    busy_seconds: float


def stage_spans(settings: Settings, job_id: str) -> list[StageSpan]:
    """Each stage's runs from stage_runs, timed from the job's creation."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT r.stage, count(*) AS runs, max(r.attempts) AS attempts,"
            " extract(epoch FROM min(r.started_at) - j.created_at) AS start_s,"
            " extract(epoch FROM max(r.finished_at) - j.created_at) AS end_s,"
            " extract(epoch FROM sum(r.finished_at - r.started_at)) AS busy_s"
            " FROM stage_runs r JOIN jobs j USING (job_id) WHERE r.job_id = %s"
            " GROUP BY r.stage, j.created_at ORDER BY min(r.started_at)",
            (job_id,),
        ).fetchall()
    return [
        StageSpan(
            str(row["stage"]), int(row["runs"]), int(row["attempts"]),
            float(row["start_s"] or 0), float(row["end_s"] or 0), float(row["busy_s"] or 0),
        )
        for row in rows
    ]  # fmt: skip


def transcript_words(settings: Settings, job_id: str) -> int:
    """Words the platform transcribed for the job (all chunks)."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT text FROM chunk_transcripts WHERE job_id = %s", (job_id,)
        ).fetchall()
    return sum(len(str(row["text"]).split()) for row in rows)


def platform_cuts(settings: Settings, job_id: str) -> list[float]:
    """The scene cuts the platform stored: the start of every scene after the first."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT start_seconds FROM scenes WHERE job_id = %s ORDER BY start_seconds", (job_id,)
        ).fetchall()
    return [float(row["start_seconds"]) for row in rows[1:]]


def delete_blobs(settings: Settings, customer_id: str, job_id: str) -> None:
    """Remove the run's large blobs (the upload, the audio chunks); keyframes stay."""
    store = BlobStore.from_settings(settings)
    if not store.is_local:
        return
    for key in (f"uploads/{customer_id}", f"audio/{job_id}"):
        shutil.rmtree(store.local_file(store.uri(key)), ignore_errors=True)


# -- P: the platform -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformRun:
    """What one job through the platform took, and what it produced."""

    job_id: str
    status: str
    job: Measured
    upload: Measured
    by_service: dict[str, float]
    infrastructure_cpu_seconds: float
    machine_busy_seconds: float
    spans: list[StageSpan]
    costs: dict[str, Any]
    words: int
    cuts: list[float]


def run_platform(settings: Settings, talk: LoopedTalk, keep_blobs: bool) -> PlatformRun:
    """Upload, submit and follow one job as a customer; CPU of every platform process."""
    services = platform_services()
    customer_id, api_key = new_customer(settings)
    pids = service_pids(settings, services)
    infra = service_pids(settings, INFRASTRUCTURE)
    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"http://127.0.0.1:{settings.gateway_port}"
    with httpx.Client(base_url=url, headers=headers) as client:
        before_upload, began = cpu_snapshot(pids), time.perf_counter()
        upload_id = upload(client, talk.video)
        uploaded = time.perf_counter()
        before, infra_before, machine_before = (
            cpu_snapshot(pids),
            cpu_snapshot(infra),
            machine_busy_seconds(),
        )
        job_id = submit(client, upload_id)
        print(f"  job {job_id} submitted ({uploaded - began:.1f} s upload)", flush=True)
        view = follow(client, job_id, uploaded, timeout=300 + 2 * talk.seconds)
        ended = time.perf_counter()
        after, infra_after, machine_after = (
            cpu_snapshot(pids),
            cpu_snapshot(infra),
            machine_busy_seconds(),
        )
        costs = job_costs(client, job_id) if view["status"] == "completed" else {}
    wait_for_assignments(settings, stage_groups(services), timeout=0)
    down = sorted(set(services) - set(service_pids(settings, services)))
    if down:
        print(f"  WARNING: not running at the end of the job: {down} (see their logs)")
    by_service = cpu_delta(before, after)
    run = PlatformRun(
        job_id=job_id,
        status=str(view["status"]),
        job=Measured(ended - uploaded, sum(by_service.values())),
        upload=Measured(uploaded - began, sum(cpu_delta(before_upload, before).values())),
        by_service=by_service,
        infrastructure_cpu_seconds=sum(cpu_delta(infra_before, infra_after).values()),
        machine_busy_seconds=machine_after - machine_before,
        spans=stage_spans(settings, job_id),
        costs=costs,
        words=transcript_words(settings, job_id),
        cuts=platform_cuts(settings, job_id),
    )  # fmt: skip
    if not keep_blobs:
        delete_blobs(settings, customer_id, job_id)
    return run


# -- N: the naive script -------------------------------------------------------------------


def naive_script(video: Path, folder: Path) -> dict[str, Any]:
    """The script the platform replaces: three steps, one after the other, one process."""
    from faster_whisper import WhisperModel

    from inference.transcriber_whisper import default_model_dir
    from media.tools import run_ffmpeg

    steps: dict[str, float] = {}
    began = time.perf_counter()
    wav = folder / "audio.wav"
    run_ffmpeg(["-i", str(video), "-vn", "-ac", "1", "-ar", "16000", str(wav)])
    steps["ffmpeg audio"] = time.perf_counter() - began
    began = time.perf_counter()
    cuts = pyscenedetect_cuts(video)
    steps["ContentDetector"] = time.perf_counter() - began
    began = time.perf_counter()
    segments, _ = WhisperModel(str(default_model_dir()), device="cpu").transcribe(str(wav))
    text = " ".join(segment.text for segment in segments)
    steps["faster-whisper defaults"] = time.perf_counter() - began
    return {"steps": steps, "cuts": cuts, "words": len(text.split())}


@dataclass(frozen=True)
class NaiveRun:
    measured: Measured
    steps: dict[str, float]
    cuts: list[float]
    words: int
    machine_busy_seconds: float


def run_naive(video: Path) -> NaiveRun:
    """The naive script in a child process: its wall time, and CPU time from its rusage."""
    command = [sys.executable, "-m", "bench.pipeline", "--naive-only", str(video)]
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
        Measured(wall, cpu), result["steps"], result["cuts"], result["words"],
        machine_after - machine_before,
    )  # fmt: skip


# -- the report ----------------------------------------------------------------------------


def knobs(settings: Settings) -> str:
    return (
        f"chunk_seconds={settings.chunk_seconds:g} worker_threads={settings.worker_threads}"
        f" whisper: batch {settings.whisper_batch_size}, beam {settings.whisper_beam_size},"
        f" {settings.whisper_cpu_threads} threads, {settings.whisper_compute_type};"
        f" topic_partitions={settings.topic_partitions}"
    )


def report_row(label: str, measured: Measured, seconds: float) -> str:
    return (
        f"{label:<34}{measured.wall_seconds:>9.1f}{measured.x_real_time(seconds):>9.1f}"
        f"{measured.cpu_seconds:>10.1f}{measured.cpu_per_video_minute(seconds):>12.2f}"
    )


def report_platform(run: PlatformRun, talk: LoopedTalk) -> None:
    print(f"  upload through the gateway (before the job; not in P): {run.upload.wall_seconds:.1f}"
          f" s wall, {run.upload.cpu_seconds:.1f} CPU s")  # fmt: skip
    print("  CPU s by service: " + ", ".join(
        f"{service} {seconds:.1f}" for service, seconds in sorted(
            run.by_service.items(), key=lambda item: -item[1])))  # fmt: skip
    other = run.machine_busy_seconds - run.job.cpu_seconds - run.infrastructure_cpu_seconds
    print(f"  infrastructure (PostgreSQL, Kafka, registry; shared, not in P): "
          f"{run.infrastructure_cpu_seconds:.1f} CPU s; the rest of the machine: {other:.1f} CPU s "
          f"of {2 * run.job.wall_seconds:.0f} available")  # fmt: skip
    print(f"  {'stage':<12}{'runs':>6}{'tries':>6}{'first start':>13}{'last end':>10}"
          f"{'busy s':>9}{'busy/span':>10}")  # fmt: skip
    for span in run.spans:
        length = max(1e-6, span.end_seconds - span.start_seconds)
        print(f"  {span.stage:<12}{span.runs:>6}{span.attempts:>6}{span.start_seconds:>12.1f}s"
              f"{span.end_seconds:>9.1f}s{span.busy_seconds:>9.1f}"
              f"{span.busy_seconds / length:>10.2f}")  # fmt: skip
    by_stage = run.costs.get("by_stage", {})
    if not by_stage:
        print("  no costs recorded for the job (is the costs service running? see its log)")
        return
    total = float(run.costs.get("total_usd", 0.0))
    parts = ", ".join(f"{stage} {usd:.6f}" for stage, usd in by_stage.items())
    per_hour = total * 3600 / talk.seconds
    print(f"  cost by stage (USD): {parts}; total {total:.6f} = {per_hour:.4f} per video-hour")
    print(f"  words transcribed {run.words}; scene cuts F1 {f1(run.cuts, talk.cuts):.3f}")


def report(talk: LoopedTalk, platform: PlatformRun, naive: NaiveRun | None) -> None:
    seconds = talk.seconds
    print()
    print(
        f"vidinsight pipeline benchmark  ({seconds / 60:g}-minute 720p talk, {len(talk.cuts)} cuts)"
    )
    print("-" * 78)
    print(f"{'':<34}{'wall s':>9}{'x real':>9}{'CPU s':>10}{'CPU s/min':>12}")
    print(report_row(f"P  platform, job {platform.status}", platform.job, seconds))
    if naive is not None:
        print(report_row("N  naive script", naive.measured, seconds))
        steps = ", ".join(f"{name} {s:.1f} s" for name, s in naive.steps.items())
        naive_f1 = f1(naive.cuts, talk.cuts)
        print(f"  N steps: {steps}; words {naive.words}; scene cuts F1 {naive_f1:.3f}")
    print("-" * 78)
    x_real = platform.job.x_real_time(seconds)
    ok = platform.status == "completed"
    met = verdict(ok and x_real >= X_REAL_TIME_TARGET)
    print(
        f"P x real time = {x_real:6.1f}   target >= {X_REAL_TIME_TARGET:.0f}"
        f" (an hour in {3600 / x_real:.0f} s)   {met}"
    )
    if naive is not None:
        ratio = naive.measured.wall_seconds / platform.job.wall_seconds
        print(f"N wall / P wall = {ratio:5.2f}   target >= {SPEED_RATIO_TARGET:.0f}"
              f"   {verdict(ok and ratio >= SPEED_RATIO_TARGET)}")  # fmt: skip
    print("-" * 78)
    report_platform(platform, talk)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="video length (default 60)")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive script")
    parser.add_argument("--keep-blobs", action="store_true", help="keep the upload and chunks")
    parser.add_argument("--naive-only", metavar="VIDEO", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_only is not None:  # the child process of run_naive
        with tempfile.TemporaryDirectory(prefix="bench-naive-") as folder:
            print(json.dumps(naive_script(args.naive_only, Path(folder))))
        return 0
    settings = Settings()
    talk = build_looped_talk(settings.state_dir / "bench", args.minutes)
    state = "cached; built" if talk.cached else "built"
    print(f"video: {talk.video} ({talk.seconds:g} s, {talk.video.stat().st_size / 1e6:.0f} MB;"
          f" {state} in {talk.generation_seconds:.0f} s)")  # fmt: skip
    print(f"settings: {knobs(settings)}")
    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
    print("P: the platform", flush=True)
    started = start_missing(platform_services())
    wait_for_assignments(settings, stage_groups(platform_services()))
    if len(started) < len(platform_services()):
        print("  (some services were already running: their settings may differ from the above)")
    try:
        platform = run_platform(settings, talk, args.keep_blobs)
    finally:
        stop_started(started)
    naive = None
    if not args.skip_naive:
        print("N: the naive script ...", flush=True)
        naive = run_naive(talk.video)
    report(talk, platform, naive)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
