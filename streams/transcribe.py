"""Transcribe: one audio chunk becomes stored text (AudioChunk -> TranscriptReady when all are in).

Each chunk is transcribed on its own, its times shifted to the video's timeline, and
recorded in PostgreSQL at once, under the job's advisory lock
(``sinks.transcripts.record_chunk``). The chunk whose recording completes the job
emits the one TranscriptReady. The record is written here rather than in ``store``
because the runtime fixes a message's outputs before its store runs, and whether
this chunk is the last one is only known once it is recorded. A redelivered last
chunk may announce the transcript again; the next stage is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from inference.transcriber import Transcriber, Transcript, transcriber_from_settings
from sinks.transcripts import job_chunks, record_chunk
from streams.runtime.context import HandlerContext, ProcessResource
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu

log = logging.getLogger("vidinsight.transcribe")


# One transcriber per worker process: the model loads once, for the first chunk.
TRANSCRIBER: ProcessResource[Transcriber] = ProcessResource(transcriber_from_settings)


def record(ctx: HandlerContext, chunk: Mapping[str, Any], transcript: Transcript) -> int | None:
    """Store the chunk's transcript; the job's word count if this completed the job, else None."""
    with ctx.transaction() as conn:
        progress = record_chunk(
            conn,
            job_id=chunk["job_id"],
            chunk_index=chunk["chunk_index"],
            chunk_count=chunk["chunk_count"],
            start_seconds=chunk["start_seconds"],
            end_seconds=chunk["end_seconds"],
            text=transcript.text,
            segments=transcript.segments_json(),
            language=transcript.language,
        )
        if not progress.complete:
            return None
        return sum(len(str(row["text"]).split()) for row in job_chunks(conn, chunk["job_id"]))


def transcribe(inbound: Inbound, ctx: HandlerContext, ready_topic: str) -> StageResult:
    """Transcribe one chunk; announce the transcript when it is the last to land.

    Every transcriber, ours or a provider's, is billed per second of the chunk's audio
    (to the millisecond, from its bounds), not by the time it took: the same chunk
    costs the same in every run.
    """
    chunk = inbound.value
    transcriber = TRANSCRIBER.get(ctx.settings)
    if transcriber.managed:
        ctx.ensure_not_cancelled("a managed transcription")
        ctx.ensure_within_budget("a managed transcription")
    with (
        ctx.blobs.local_path(str(chunk["audio_uri"])) as audio,
        measure_cpu(ctx.stage, transcriber.provider, transcriber.model_name),
    ):
        transcript = transcriber.transcribe(audio, chunk.get("language"), deadline=ctx.deadline)
    transcript = transcript.shifted(float(chunk["start_seconds"]))
    audio_seconds = round(float(chunk["end_seconds"]) - float(chunk["start_seconds"]), 3)
    word_count = record(ctx, chunk, transcript)
    log.info(
        "chunk transcribed",
        extra={
            "detail": {
                "chunk_index": chunk["chunk_index"],
                "words": transcript.word_count,
                "audio_seconds": audio_seconds,
                "last_chunk": word_count is not None,
            }
        },
    )
    outputs = []
    if word_count is not None:
        ready = {
            "job_id": inbound.job_id,
            "customer_id": inbound.customer_id,
            "chunk_count": int(chunk["chunk_count"]),
            "language": transcript.language,
            "word_count": word_count,
            "duration_seconds": float(chunk["duration_seconds"]),
            "ready_at_ms": int(time.time() * 1000),
        }
        outputs.append(Output(ready_topic, "TranscriptReady", inbound.job_id, ready))
    item = f"chunk{chunk['chunk_index']}"
    cost = ctx.cost(item, transcript.provider, transcript.model, "audio_seconds", audio_seconds)
    return StageResult(outputs=outputs, cost_events=[cost], payload=transcript.text)


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The transcribe stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "transcribe", topics, group_id, lambda t: partial(transcribe, ready_topic=t["output"])
    )


STAGE = build()
