"""Preprocess: a media blob becomes audio chunks and stored scenes (MediaIngested -> AudioChunk).

The audio is cut at silences into chunks of about ``chunk_seconds`` so transcription
fans out across consumers; scenes and their keyframes go to PostgreSQL and the blob
store. Audio extraction (an FFmpeg process) and scene detection (OpenCV in this
process) run side by side, one core each, in memory that does not grow with the
media's length (bench/media_memory.py measures it), and each stops as soon as what it
has decoded passes the maximum duration or picture size. Media without audio has no chunks: the
job goes on with visual insights only, so this stage announces its (empty)
transcript itself.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from media.audio import copy_span, extract_audio
from media.chunking import ChunkSpan, plan_chunks
from media.keyframes import encode_jpeg, keyframes
from media.scenes import detect_scenes
from sinks.blobs import BlobStore
from sinks.db import Connection
from sinks.jobs import get_job
from sinks.scenes import save_scenes
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu
from topics.catalogue import TRANSCRIPTS_READY_TOPIC
from vidinsight.settings import Settings


@dataclass(frozen=True)
class MediaWork:
    """One media blob to preprocess and what that needs of a handler's context (the
    memory bench runs the same work with a blob store of its own and no Kafka)."""

    settings: Settings
    blobs: BlobStore
    job_id: str
    media: Path
    # The media's length as ingest measured it: only said back in a too_long message.
    ingested_seconds: float
    deadline: float | None


@dataclass(frozen=True)
class Prepared:
    """What preprocessing stored: the chunks (span, uri, bytes), the scene rows, and
    the bytes of their keyframes and thumbnails."""

    chunks: list[tuple[ChunkSpan, str, int]]
    scene_rows: list[dict[str, Any]]
    frame_bytes: int


def prepare(work: MediaWork, *, has_audio: bool, has_video: bool) -> Prepared:
    """Audio chunks and scenes side by side, one core each."""
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        audio_job = pool.submit(cut_audio, work, Path(tmp)) if has_audio else None
        scene_job = pool.submit(find_scenes, work) if has_video else None
        chunks = [] if audio_job is None else audio_job.result()
        rows, frame_bytes = ([], 0) if scene_job is None else scene_job.result()
    return Prepared(chunks, rows, frame_bytes)


def cut_audio(work: MediaWork, folder: Path) -> list[tuple[ChunkSpan, str, int]]:
    """Extract 16 kHz mono audio, cut it at silences, store each chunk: (span, uri, bytes).

    The audio goes to a WAV file, its levels are measured and its chunks copied out a
    block at a time: memory does not grow with its length. Past the maximum duration of
    decoded audio it stops (too_long), whatever the file declared.
    """
    settings = work.settings
    wav = extract_audio(
        work.media,
        folder / "audio.wav",
        deadline=work.deadline,
        max_seconds=settings.max_duration_seconds,
        declared_seconds=work.ingested_seconds,
    )
    spans = plan_chunks(
        wav, target_seconds=settings.chunk_seconds, search_seconds=settings.chunk_search_seconds
    )
    stored = []
    for span in spans:
        piece = copy_span(
            wav, span.start_sample, span.end_sample, folder / f"chunk{span.index}.wav"
        )
        uri = work.blobs.put_file(piece, f"audio/{work.job_id}/{span.index:05d}.wav")
        stored.append((span, uri, piece.stat().st_size))
        piece.unlink()
    return stored


def find_scenes(work: MediaWork) -> tuple[list[dict[str, Any]], int]:
    """Scene rows with keyframe and thumbnail blobs, and the bytes stored.

    Each keyframe is decoded scaled down, stored at once and let go, so memory holds one
    at a time. Frames past the maximum duration (too_long) or over the maximum picture
    size (picture_too_large) stop the work, whatever the file declared.
    """
    settings, store, job_id = work.settings, work.blobs, work.job_id
    analysis = detect_scenes(
        work.media,
        frame_width=settings.scene_frame_width_pixels,
        cut_threshold=settings.scene_cut_threshold,
        min_scene_seconds=settings.scene_min_seconds,
        max_seconds=settings.max_duration_seconds,
        max_pixels=settings.max_picture_pixels,
        deadline=work.deadline,
    )
    rows: list[dict[str, Any]] = [
        {
            "start_seconds": scene.start_seconds,
            "end_seconds": scene.end_seconds,
            "keyframe_seconds": scene.keyframe_seconds,
        }
        for scene in analysis.scenes
    ]
    stored_bytes = 0
    for index, image in keyframes(
        work.media,
        analysis.scenes,
        max_width=settings.keyframe_width_pixels,
        max_pixels=settings.max_picture_pixels,
        deadline=work.deadline,
    ):
        keyframe = encode_jpeg(image)
        thumbnail = encode_jpeg(image, settings.thumbnail_width_pixels)
        rows[index]["keyframe_uri"] = store.put_bytes(keyframe, f"frames/{job_id}/{index:04d}.jpg")
        rows[index]["thumbnail_uri"] = store.put_bytes(
            thumbnail, f"frames/{job_id}/{index:04d}_thumb.jpg"
        )
        stored_bytes += len(keyframe) + len(thumbnail)
    return rows, stored_bytes


def preprocess(
    inbound: Inbound, ctx: HandlerContext, chunks_topic: str, ready_topic: str
) -> StageResult:
    """Chunks for transcription and scenes for analysis, from one media blob.

    The work is billed per second of the media as ingest probed it (to the millisecond),
    not by the time it took: the same media costs the same in every run.
    """
    value = inbound.value
    with (
        ctx.blobs.local_path(str(value["media_uri"])) as media,
        measure_cpu(ctx.stage, "local", "media"),
    ):
        work = MediaWork(
            settings=ctx.settings,
            blobs=ctx.blobs,
            job_id=inbound.job_id,
            media=media,
            ingested_seconds=float(value["duration_seconds"]),
            deadline=ctx.deadline,
        )
        done = prepare(work, has_audio=bool(value["has_audio"]), has_video=bool(value["has_video"]))
    chunks = done.chunks
    language = language_hint(ctx, inbound.job_id) if chunks else None
    outputs = [
        Output(chunks_topic, "AudioChunk", f"{inbound.job_id}:{span.index}",
               audio_chunk(inbound, span, uri, len(chunks), language))
        for span, uri, _ in chunks
    ]  # fmt: skip
    if not chunks:
        outputs.append(
            Output(ready_topic, "TranscriptReady", inbound.job_id, empty_transcript(inbound))
        )
    media_seconds = round(float(value["duration_seconds"]), 3)
    costs: list[Mapping[str, Any]] = [
        ctx.cost("media", "local", "media", "media_seconds", media_seconds)
    ]
    stored = sum(size for _, _, size in chunks) + done.frame_bytes
    if stored:
        costs.append(ctx.cost("blobs", "storage", "blob", "storage_bytes", stored))
    return StageResult(outputs=outputs, cost_events=costs, payload=done.scene_rows)


def language_hint(ctx: HandlerContext, job_id: str) -> str | None:
    """The job's ``language`` option: MediaIngested does not carry the job's options."""
    with ctx.transaction() as conn:
        job = get_job(conn, job_id)
    options = (job or {}).get("options") or {}
    language = options.get("language") if isinstance(options, Mapping) else None
    return str(language) if language else None


def audio_chunk(
    inbound: Inbound, span: ChunkSpan, uri: str, count: int, language: str | None
) -> dict[str, Any]:
    return {
        "job_id": inbound.job_id,
        "customer_id": inbound.customer_id,
        "chunk_index": span.index,
        "chunk_count": count,
        "audio_uri": uri,
        "start_seconds": span.start_seconds,
        "end_seconds": span.end_seconds,
        "duration_seconds": float(inbound.value["duration_seconds"]),
        "language": language,
    }


def empty_transcript(inbound: Inbound) -> dict[str, Any]:
    """The transcript of media without audio: no chunks, no words."""
    return {
        "job_id": inbound.job_id,
        "customer_id": inbound.customer_id,
        "chunk_count": 0,
        "language": "und",
        "word_count": 0,
        "duration_seconds": float(inbound.value["duration_seconds"]),
        "ready_at_ms": int(time.time() * 1000),
    }


def store_scenes(conn: Connection, inbound: Inbound, result: StageResult) -> None:
    save_scenes(conn, inbound.job_id, result.payload or [])


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The preprocess stage on the catalogue's topics, or on private ones (``on_topics``;
    "ready" names the topic an empty job's transcript is announced on)."""
    return on_topics(
        "preprocess",
        topics,
        group_id,
        lambda t: partial(
            preprocess,
            chunks_topic=t["output"],
            ready_topic=t.get("ready", TRANSCRIPTS_READY_TOPIC),
        ),
        store=store_scenes,
    )


STAGE = build()
