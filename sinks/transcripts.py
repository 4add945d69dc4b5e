"""Per-chunk transcripts of a job's audio.

Chunks of one job are transcribed in parallel by different consumers. Each records
its chunk under the job's join lock (``sinks.join``), so the chunk that completes the
job's transcript, and with it perhaps the join, always sees every other chunk.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection
from sinks.join import JoinState, join_state, lock_job


def record_chunk(
    conn: Connection,
    *,
    job_id: str,
    segment_index: int,
    chunk_index: int,
    chunk_count: int,
    start_seconds: float,
    end_seconds: float,
    text: str,
    segments: list[dict[str, Any]],
    language: str | None,
) -> JoinState:
    """Upsert one chunk's transcript and return the job's join state, under its lock."""
    lock_job(conn, job_id)
    conn.execute(
        "INSERT INTO chunk_transcripts (job_id, segment_index, chunk_index, chunk_count,"
        " start_seconds, end_seconds, text, segments, language)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (job_id, segment_index, chunk_index) DO UPDATE SET"
        " chunk_count = EXCLUDED.chunk_count, start_seconds = EXCLUDED.start_seconds,"
        " end_seconds = EXCLUDED.end_seconds, text = EXCLUDED.text,"
        " segments = EXCLUDED.segments, language = EXCLUDED.language",
        (
            job_id,
            segment_index,
            chunk_index,
            chunk_count,
            start_seconds,
            end_seconds,
            text,
            Jsonb(segments),
            language,
        ),
    )
    return join_state(conn, job_id)


def job_chunks(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's chunk transcripts in playback order."""
    return conn.execute(
        "SELECT * FROM chunk_transcripts WHERE job_id = %s ORDER BY segment_index, chunk_index",
        (job_id,),
    ).fetchall()
