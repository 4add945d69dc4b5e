"""Preprocess, the audio branch: a media segment becomes audio chunks (MediaIngested -> AudioChunk).

Each segment's audio is extracted by FFmpeg (seeking straight to the segment) and cut
at silences into chunks of about ``chunk_seconds`` so transcription fans out across
consumers; the chunks of neighbouring segments meet in the same pause, found by both
on the same stretch of audio (``media.chunking``). Memory does not grow with the
media's length (bench/media_memory.py), and extraction stops as soon as the decoded
audio passes the maximum duration. The segment's part of the join is recorded at
once: a segment without audio (or media without any) has no chunks, and if it is the
last part the job needed, this stage announces the job ready itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from media.audio import copy_span, extract_audio
from media.chunking import (
    AudioWindow,
    ChunkSpan,
    audio_window,
    border_window,
    plan_segment_chunks,
)
from sinks.db import Connection
from sinks.jobs import get_job
from sinks.join import AUDIO, record_part
from streams.join import ready_outputs
from streams.media_work import MediaWork, media_work
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu
from topics.catalogue import TRANSCRIPTS_READY_TOPIC

# A cut chunk: its span on the video timeline, its blob and its size in bytes.
StoredChunk = tuple[ChunkSpan, str, int]


def cut_audio(work: MediaWork, folder: Path) -> list[StoredChunk]:
    """Extract the segment's 16 kHz mono audio, cut it at silences, store each chunk.

    The audio goes to a WAV file, its levels are measured and its chunks copied out a
    block at a time: memory does not grow with its length. Past the maximum duration of
    decoded audio it stops (too_long), whatever the file declared.
    """
    settings, segment = work.settings, work.segment
    search = settings.chunk_search_seconds

    def extract(window: AudioWindow, name: str) -> Path:
        return extract_audio(
            work.media,
            folder / name,
            start_seconds=window.start_seconds,
            duration_seconds=window.duration_seconds,
            deadline=work.deadline,
            max_seconds=settings.max_duration_seconds,
            declared_seconds=work.ingested_seconds,
        )

    wav = extract(audio_window(segment.start_seconds, segment.end_seconds, search), "audio.wav")
    # The end border is chosen from the very decode the next segment starts with.
    end_border = None
    if segment.end_seconds is not None:
        end_border = extract(border_window(segment.end_seconds, search), "border.wav")
    spans = plan_segment_chunks(
        wav,
        segment_start_seconds=segment.start_seconds,
        segment_end_seconds=segment.end_seconds,
        end_border_wav=end_border,
        target_seconds=settings.chunk_seconds,
        search_seconds=search,
    )
    stored = []
    for span in spans:
        piece = copy_span(
            wav, span.start_sample, span.end_sample, folder / f"chunk{span.index}.wav"
        )
        key = f"audio/{work.job_id}/{segment.index:04d}-{span.index:05d}.wav"
        stored.append((span, work.blobs.put_file(piece, key), piece.stat().st_size))
        piece.unlink()
    return stored


def preprocess(
    inbound: Inbound, ctx: HandlerContext, chunks_topic: str, ready_topic: str
) -> StageResult:
    """Chunks for transcription from one segment of a media blob.

    The work is billed per second of the segment as ingest probed the media (to the
    millisecond), not by the time it took: the same media costs the same in every run.
    """
    value = inbound.value
    with ctx.blobs.local_path(str(value["media_uri"])) as media:
        work = media_work(ctx, inbound, media)
        segment = work.segment
        chunks: list[StoredChunk] = []
        if value["has_audio"]:
            with measure_cpu(ctx.stage, "local", "audio"), tempfile.TemporaryDirectory() as tmp:
                chunks = cut_audio(work, Path(tmp))
    with ctx.transaction() as conn:
        state = record_part(conn, inbound.job_id, AUDIO, segment.index, segment.count, len(chunks))
        announced = ready_outputs(conn, state, ctx, ready_topic)
        language = language_hint(conn, inbound.job_id) if chunks else None
    outputs = [
        Output(chunks_topic, "AudioChunk", f"{inbound.job_id}:{segment.index}:{span.index}",
               audio_chunk(inbound, segment.index, span, uri, len(chunks), language))
        for span, uri, _ in chunks
    ]  # fmt: skip
    seconds = work.segment_seconds
    costs: list[Mapping[str, Any]] = [
        ctx.cost(f"audio{segment.index}", "local", "audio", "media_seconds", seconds)
    ]
    stored = sum(size for _, _, size in chunks)
    if stored:
        costs.append(ctx.cost(f"chunks{segment.index}", "storage", "blob", "storage_bytes", stored))
    return StageResult(outputs=outputs + announced, cost_events=costs)


def language_hint(conn: Connection, job_id: str) -> str | None:
    """The job's ``language`` option: MediaIngested does not carry the job's options."""
    job = get_job(conn, job_id)
    options = (job or {}).get("options") or {}
    language = options.get("language") if isinstance(options, Mapping) else None
    return str(language) if language else None


def audio_chunk(
    inbound: Inbound, segment_index: int, span: ChunkSpan, uri: str, count: int,
    language: str | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "job_id": inbound.job_id,
        "customer_id": inbound.customer_id,
        "segment_index": segment_index,
        "chunk_index": span.index,
        "chunk_count": count,
        "audio_uri": uri,
        "start_seconds": span.start_seconds,
        "end_seconds": span.end_seconds,
        "duration_seconds": float(inbound.value["duration_seconds"]),
        "language": language,
    }


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The preprocess stage on the catalogue's topics, or on private ones (``on_topics``;
    "ready" names the topic a joined job is announced on)."""
    return on_topics(
        "preprocess",
        topics,
        group_id,
        lambda t: partial(
            preprocess,
            chunks_topic=t["output"],
            ready_topic=t.get("ready", TRANSCRIPTS_READY_TOPIC),
        ),
    )


STAGE = build()
