"""Announcing a job ready for analysis once its branches are joined.

The audio branch (preprocess cuts a segment, transcribe records each chunk) and the
scenes branch record their parts in PostgreSQL (``sinks.join``); the recording that
completes the join announces TranscriptReady, computed from what is stored, so it
says the same whichever branch announces it. A part redelivered later finds the job
ready too, but the announcement was claimed by the first run: only that run, if it
is redelivered itself, announces again.
"""

from __future__ import annotations

import time
from typing import Any

from sinks.db import Connection
from sinks.join import JoinState, claim_announcement
from sinks.transcripts import job_chunks
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Output

# The language of a job whose media has no speech to detect one in.
UNDETERMINED = "und"


def ready_outputs(
    conn: Connection, state: JoinState, ctx: HandlerContext, ready_topic: str
) -> list[Output]:
    """The TranscriptReady to produce when ``state``, recorded by this handler call,
    completes the join and this run claims the announcement, else nothing (every message
    of a job carries the video's duration)."""
    inbound = ctx.inbound
    run = f"{ctx.stage}:{inbound.key}"  # a redelivery of this message is the same run
    if not state.ready or not claim_announcement(conn, inbound.job_id, run):
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
