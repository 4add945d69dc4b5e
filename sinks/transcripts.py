"""Per-chunk transcripts, and knowing when a job's last chunk has landed.

Chunks of one job are transcribed in parallel by different consumers. Each records
its chunk and counts the job's chunks while holding a per-job advisory lock, so of
two chunks finishing at the same moment the later one always sees both and is the
one that announces the transcript ready; without the lock each could miss the other's
uncommitted row and the job would stall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection


@dataclass(frozen=True)
class ChunkProgress:
    """Where a job's transcription stands after recording one chunk."""

    received: int
    expected: int
    created: bool  # False when this chunk had been recorded before (a redelivery)

    @property
    def complete(self) -> bool:
        """Every chunk of the job is in."""
        return self.received >= self.expected


def record_chunk(
    conn: Connection,
    *,
    job_id: str,
    chunk_index: int,
    chunk_count: int,
    start_seconds: float,
    end_seconds: float,
    text: str,
    segments: list[dict[str, Any]],
    language: str | None,
) -> ChunkProgress:
    """Upsert one chunk's transcript and count the job's chunks, under the job's lock."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"chunks:{job_id}",))
    row = conn.execute(
        "INSERT INTO chunk_transcripts (job_id, chunk_index, chunk_count, start_seconds,"
        " end_seconds, text, segments, language) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (job_id, chunk_index) DO UPDATE SET chunk_count = EXCLUDED.chunk_count,"
        " start_seconds = EXCLUDED.start_seconds, end_seconds = EXCLUDED.end_seconds,"
        " text = EXCLUDED.text, segments = EXCLUDED.segments, language = EXCLUDED.language"
        " RETURNING (xmax = 0) AS created",
        (
            job_id,
            chunk_index,
            chunk_count,
            start_seconds,
            end_seconds,
            text,
            Jsonb(segments),
            language,
        ),
    ).fetchone()
    count = conn.execute(
        "SELECT count(*) AS n FROM chunk_transcripts WHERE job_id = %s", (job_id,)
    ).fetchone()
    return ChunkProgress(
        received=int(count["n"]) if count else 0,
        expected=chunk_count,
        created=bool(row and row["created"]),
    )


def job_chunks(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's chunk transcripts in playback order."""
    return conn.execute(
        "SELECT * FROM chunk_transcripts WHERE job_id = %s ORDER BY chunk_index", (job_id,)
    ).fetchall()
