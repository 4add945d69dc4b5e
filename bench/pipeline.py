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
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.customer import Customer, delete_blobs, follow, job_costs, wait_for_jobs
from bench.job_records import (
    JobTimes,
    StageRun,
    batch_wall_seconds,
    chain_seconds,
    job_times,
    platform_cuts,
    stage_runs,
    stage_spans,
    transcript_words,
)
from bench.looped_talk import LoopedTalk, build_clips, build_looped_talk
from bench.media import f1, verdict
from bench.naive import Measured, NaiveRun, print_naive_script, run_naive
from bench.platform_stack import (
    HEAVY_STAGES,
    Platform,
    Stack,
    Usage,
    service_of,
    stage_groups,
    wait_for_assignments,
)
from vidinsight.settings import Settings

X_REAL_TIME_TARGET = 20.0
SPEED_RATIO_TARGET = 2.5
PREDICTED_CORES = 8
CORES = len(os.sched_getaffinity(0))
JOBS_PER_CUSTOMER = 50  # well under the gateway's per-customer quota of jobs in flight
MIB = 1024 * 1024


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


def run_clips(
    platform: Platform, clips: Sequence[Path], customers_asked: int | None, keep_blobs: bool
) -> PlatformRun:
    """Upload every clip (not timed), then submit them all at once, customers in turn:
    as many as asked, else four, or more to keep each under ``JOBS_PER_CUSTOMER``."""
    settings = platform.settings
    count = customers_asked or max(min(len(clips), 4), math.ceil(len(clips) / JOBS_PER_CUSTOMER))
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
    parser.add_argument(
        "--customers",
        type=int,
        metavar="N",
        help="short-clip mode: the clips' customers (default 4, more above 50 clips each)",
    )
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive script")
    parser.add_argument("--keep-blobs", action="store_true", help="keep uploads and chunks")
    parser.add_argument("--naive-only", metavar="VIDEO", type=Path, nargs="+",
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if (
        args.workers < 1
        or args.repeat < 1
        or (args.clips is not None and args.clips < 1)
        or (args.customers is not None and args.customers < 1)
    ):
        parser.error("--workers, --repeat and --clips take 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.naive_only is not None:  # the child process of run_naive
        print_naive_script(args.naive_only)
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
                             lambda: run_clips(platform, videos, args.customers, args.keep_blobs),
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
