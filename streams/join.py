"""Announcing a job ready for analysis once its branches are joined.

The audio branch (preprocess cuts a segment, transcribe records each chunk) and the
scenes branch record their parts in PostgreSQL (``sinks.join``); whichever recording
completes the join announces TranscriptReady, computed from what is stored, so it
says the same whichever branch, and whichever redelivery, announces it.
"""

from __future__ import annotations

import time
from typing import Any

from sinks.db import Connection
from sinks.join import JoinState
from sinks.transcripts import job_chunks
from streams.runtime.stage import Inbound, Output

# The language of a job whose media has no speech to detect one in.
UNDETERMINED = "und"


def ready_outputs(
    conn: Connection, state: JoinState, inbound: Inbound, ready_topic: str
) -> list[Output]:
    """The TranscriptReady to produce when ``state``, recorded for ``inbound``, completes
    the join, else nothing (every message of a job carries the video's duration)."""
    if not state.ready:
        return []
    value = transcript_ready(
        conn, inbound.job_id, inbound.customer_id, float(inbound.value["duration_seconds"])
    )
    return [Output(ready_topic, "TranscriptReady", inbound.job_id, value)]


def transcript_ready(
    conn: Connection, job_id: str, customer_id: str | None, duration_seconds: float
) -> dict[str, Any]:
    """The announcement of a joined job, from its stored chunks."""
    chunks = job_chunks(conn, job_id)
    languages = [str(chunk["language"]) for chunk in chunks if chunk["language"]]
    return {
        "job_id": job_id,
        "customer_id": customer_id,
        "chunk_count": len(chunks),
        "language": languages[0] if languages else UNDETERMINED,
        "word_count": sum(len(str(chunk["text"]).split()) for chunk in chunks),
        "duration_seconds": duration_seconds,
        "ready_at_ms": int(time.time() * 1000),
    }
