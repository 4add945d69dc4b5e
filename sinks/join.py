"""The join of a job's two branches: audio (cut, then transcribed chunk by chunk) and
scenes, each recorded per time segment; the analysis may start once both are whole.

Every recording takes the job's advisory lock and reads the join's state in the same
transaction, so of two parts recorded at the same moment the later one always sees
both and is the one that finds the job ready; without the lock each could miss the
other's uncommitted row and the job would never be announced. A part redelivered
after that also finds the job ready: ``claim_announcement`` lets only the run that
first found it ready announce it (again, if that run itself is redelivered).
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.db import Connection

AUDIO = "audio"
SCENES = "scenes"


@dataclass(frozen=True)
class JoinState:
    """What of a job's branches is recorded so far."""

    segment_count: int  # 0 while nothing is recorded
    audio_segments: int
    scene_segments: int
    chunks_expected: int  # chunks cut from the audio segments recorded so far
    chunks_transcribed: int

    @property
    def ready(self) -> bool:
        """Every segment is cut and searched for scenes, and every chunk transcribed."""
        return (
            self.segment_count > 0
            and self.audio_segments == self.segment_count
            and self.scene_segments == self.segment_count
            and self.chunks_transcribed == self.chunks_expected
        )


def lock_job(conn: Connection, job_id: str) -> None:
    """Hold the job's join lock until this transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"join:{job_id}",))


def record_part(
    conn: Connection,
    job_id: str,
    branch: str,
    segment_index: int,
    segment_count: int,
    chunk_count: int | None = None,
) -> JoinState:
    """Record that ``branch`` is done with a segment (audio: cut into ``chunk_count``
    chunks) and return the join's state, under the job's lock."""
    lock_job(conn, job_id)
    conn.execute(
        "INSERT INTO job_parts (job_id, branch, segment_index, segment_count, chunk_count)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id, branch, segment_index)"
        " DO UPDATE SET segment_count = EXCLUDED.segment_count,"
        " chunk_count = EXCLUDED.chunk_count",
        (job_id, branch, segment_index, segment_count, chunk_count),
    )
    return join_state(conn, job_id)


def join_state(conn: Connection, job_id: str) -> JoinState:
    """The join's state as this transaction sees it (take ``lock_job`` first to act on it)."""
    row = conn.execute(
        "SELECT coalesce(max(segment_count), 0) AS segments,"
        " count(*) FILTER (WHERE branch = %s) AS audio,"
        " count(*) FILTER (WHERE branch = %s) AS scenes,"
        " coalesce(sum(chunk_count), 0) AS expected,"
        " (SELECT count(*) FROM chunk_transcripts c WHERE c.job_id = %s) AS transcribed"
        " FROM job_parts WHERE job_id = %s",
        (AUDIO, SCENES, job_id, job_id),
    ).fetchone()
    assert row is not None  # an aggregate always answers one row
    return JoinState(
        segment_count=int(row["segments"]),
        audio_segments=int(row["audio"]),
        scene_segments=int(row["scenes"]),
        chunks_expected=int(row["expected"]),
        chunks_transcribed=int(row["transcribed"]),
    )


def claim_announcement(conn: Connection, job_id: str, run: str) -> bool:
    """Whether ``run`` (stage and message key) announces the joined job: the first run to
    ask claims it, and only that run's redeliveries are told yes again. Call under the
    job's lock, once its join is ready."""
    row = conn.execute(
        "INSERT INTO job_joins (job_id, announced_by) VALUES (%s, %s)"
        " ON CONFLICT (job_id) DO UPDATE SET job_id = EXCLUDED.job_id"
        " RETURNING announced_by",
        (job_id, run),
    ).fetchone()
    return row is not None and row["announced_by"] == run
