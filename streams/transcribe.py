"""Transcribe: one audio chunk becomes stored text (AudioChunk -> TranscriptReady when joined).

Each chunk is transcribed on its own, its times shifted to the video's timeline, and
recorded in PostgreSQL at once, under the job's join lock
(``sinks.transcripts.record_chunk``). The chunk whose recording completes the join
(every segment cut and searched for scenes, every chunk transcribed) announces
TranscriptReady (``streams.join``). The record is written here rather than in
``store`` because the runtime fixes a message's outputs before its store runs, and
whether this chunk completes the join is only known once it is recorded. A
redelivered last chunk may announce the job again; the next stage is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial

from inference.transcriber import Transcriber, transcriber_from_settings
from sinks.transcripts import record_chunk
from streams.join import ready_outputs
from streams.runtime.context import HandlerContext, ProcessResource
from streams.runtime.stage import Inbound, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu
from vidinsight.settings import Settings

log = logging.getLogger("vidinsight.transcribe")


HANDLERS_PER_TURN = 6
# One transcriber per worker process: the model loads once, for the first chunk.
TRANSCRIBER: ProcessResource[Transcriber] = ProcessResource(transcriber_from_settings)


def transcribe(inbound: Inbound, ctx: HandlerContext, ready_topic: str) -> StageResult:
    """Transcribe one chunk; announce the job when this chunk completes its join.

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
        transcript = transcriber.transcribe(
            audio, chunk.get("language"), deadline=ctx.deadline, tenant=inbound.customer_id
        )
    transcript = transcript.shifted(float(chunk["start_seconds"]))
    audio_seconds = round(float(chunk["end_seconds"]) - float(chunk["start_seconds"]), 3)
    with ctx.transaction() as conn:
        state = record_chunk(
            conn,
            job_id=inbound.job_id,
            segment_index=int(chunk.get("segment_index") or 0),
            chunk_index=int(chunk["chunk_index"]),
            chunk_count=int(chunk["chunk_count"]),
            start_seconds=float(chunk["start_seconds"]),
            end_seconds=float(chunk["end_seconds"]),
            text=transcript.text,
            segments=transcript.segments_json(),
            language=transcript.language,
        )
        outputs = ready_outputs(conn, state, ctx, ready_topic)
    log.info(
        "chunk transcribed",
        extra={
            "detail": {
                "segment_index": chunk.get("segment_index") or 0,
                "chunk_index": chunk["chunk_index"],
                "words": transcript.word_count,
                "audio_seconds": audio_seconds,
                "window_clips": transcript.window_clips,
                "job_ready": bool(outputs),
            }
        },
    )
    item = f"chunk{chunk.get('segment_index') or 0}.{chunk['chunk_index']}"
    cost = ctx.cost(item, transcript.provider, transcript.model, "audio_seconds", audio_seconds)
    return StageResult(outputs=outputs, cost_events=[cost], payload=transcript.text)


def handler_threads(settings: Settings) -> int:
    """Chunks in hand at once: with the local model packing short clips, six per turn of
    the model, so that while one window of four clips is decoded the next one fills
    (``inference.packing``); a waiting handler holds only its chunk's audio."""
    if settings.transcriber != "faster-whisper" or not settings.whisper_pack:
        return settings.worker_threads
    from inference.transcriber_whisper import concurrent_transcriptions

    return max(settings.worker_threads, HANDLERS_PER_TURN * concurrent_transcriptions(settings))


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The transcribe stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "transcribe",
        topics,
        group_id,
        lambda t: partial(transcribe, ready_topic=t["output"]),
        handler_threads=handler_threads,
    )


STAGE = build()
