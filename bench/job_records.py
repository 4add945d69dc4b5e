"""What the jobs left in PostgreSQL, read back to say where a run's time went.

Every time here is from the database's own stamps (``jobs``, ``stage_runs``,
``chunk_transcripts``), so it is exact to one clock, whichever process did the work;
the transcript and the scene cuts are read back to check what the platform produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.platform_stack import HEAVY_STAGES
from sinks.db import connect
from vidinsight.settings import Settings


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
