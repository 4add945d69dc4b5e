"""Preprocess: a media blob becomes audio chunks and stored scenes (MediaIngested -> AudioChunk).

The audio is cut at silences into chunks of about ``chunk_seconds`` so transcription
fans out across consumers; scenes and their keyframes go to PostgreSQL and the blob
store. Audio extraction (an FFmpeg process) and scene detection (OpenCV in this
process) run side by side, one core each. Media without audio has no chunks: the
job goes on with visual insights only, so this stage announces its (empty)
transcript itself.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from media.audio import SAMPLE_RATE_HZ, extract_audio, read_wav, write_wav
from media.chunking import ChunkSpan, plan_chunks
from media.keyframes import encode_jpeg
from media.scenes import SceneAnalysis, detect_scenes
from sinks.db import Connection
from sinks.jobs import get_job
from sinks.scenes import save_scenes
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from topics.catalogue import TRANSCRIPTS_READY_TOPIC


def cut_audio(ctx: HandlerContext, media: Path, folder: Path) -> list[tuple[ChunkSpan, str, int]]:
    """Extract 16 kHz mono audio, cut it at silences, store each chunk: (span, uri, bytes)."""
    settings, store, job_id = ctx.settings, ctx.blobs, ctx.inbound.job_id
    samples = read_wav(extract_audio(media, folder / "audio.wav", deadline=ctx.deadline))
    spans = plan_chunks(
        samples,
        SAMPLE_RATE_HZ,
        target_seconds=settings.chunk_seconds,
        search_seconds=settings.chunk_search_seconds,
    )
    stored = []
    for span in spans:
        piece = write_wav(
            folder / f"chunk{span.index}.wav", samples[span.start_sample : span.end_sample]
        )
        uri = store.put_file(piece, f"audio/{job_id}/{span.index:05d}.wav")
        stored.append((span, uri, piece.stat().st_size))
        piece.unlink()
    return stored


def find_scenes(
    ctx: HandlerContext, media: Path
) -> tuple[SceneAnalysis, list[dict[str, Any]], int]:
    """Scenes with keyframe and thumbnail blobs; the analysis, the rows and the bytes stored."""
    settings, store, job_id = ctx.settings, ctx.blobs, ctx.inbound.job_id
    analysis = detect_scenes(
        media,
        frame_width=settings.scene_frame_width_pixels,
        cut_threshold=settings.scene_cut_threshold,
        min_scene_seconds=settings.scene_min_seconds,
        deadline=ctx.deadline,
    )
    rows, stored_bytes = [], 0
    for index, scene in enumerate(analysis.scenes):
        row: dict[str, Any] = {
            "start_seconds": scene.start_seconds,
            "end_seconds": scene.end_seconds,
            "keyframe_seconds": scene.keyframe_seconds,
        }
        if scene.keyframe is not None:
            keyframe = encode_jpeg(scene.keyframe)
            thumbnail = encode_jpeg(scene.keyframe, settings.thumbnail_width_pixels)
            row["keyframe_uri"] = store.put_bytes(keyframe, f"frames/{job_id}/{index:04d}.jpg")
            row["thumbnail_uri"] = store.put_bytes(
                thumbnail, f"frames/{job_id}/{index:04d}_thumb.jpg"
            )
            stored_bytes += len(keyframe) + len(thumbnail)
        rows.append(row)
    return analysis, rows, stored_bytes


def preprocess(
    inbound: Inbound, ctx: HandlerContext, chunks_topic: str, ready_topic: str
) -> StageResult:
    """Chunks for transcription and scenes for analysis, from one media blob."""
    value = inbound.value
    began = time.monotonic()
    chunks: list[tuple[ChunkSpan, str, int]] = []
    scene_rows: list[dict[str, Any]] = []
    frame_bytes = 0
    with (
        ctx.blobs.local_path(str(value["media_uri"])) as media,
        tempfile.TemporaryDirectory() as tmp,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        audio_job = pool.submit(cut_audio, ctx, media, Path(tmp)) if value["has_audio"] else None
        scene_job = pool.submit(find_scenes, ctx, media) if value["has_video"] else None
        if audio_job is not None:
            chunks = audio_job.result()
        if scene_job is not None:
            _, scene_rows, frame_bytes = scene_job.result()
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
    costs: list[Mapping[str, Any]] = [
        ctx.cost("media", "local", "media", "compute_seconds", round(time.monotonic() - began, 3))
    ]
    stored = sum(size for _, _, size in chunks) + frame_bytes
    if stored:
        costs.append(ctx.cost("blobs", "storage", "blob", "storage_bytes", stored))
    return StageResult(outputs=outputs, cost_events=costs, payload=scene_rows)


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
