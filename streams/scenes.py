"""Scenes, the scene branch: a media segment becomes stored scenes and keyframes.

Scene cuts and keyframes run in a consumer group of their own on the same messages as
the audio branch, so transcription never waits for them. Each segment decides the
cuts inside its borders with context on both sides (``media.scenes``) and stores its
scenes clipped to them ("pieces"; ``sinks.scenes`` joins a scene split by a border).
The pieces and the segment's part of the join are written in one transaction; if
that completes the join, this stage announces the job ready for analysis. Media
without pictures records an empty part, so the join never waits for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from media.keyframes import encode_jpeg, keyframes
from media.scenes import detect_scenes
from sinks.join import SCENES, record_part
from sinks.scenes import save_scene_pieces
from streams.join import ready_outputs
from streams.media_work import MediaWork, media_work
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu


def find_scenes(work: MediaWork) -> tuple[list[dict[str, Any]], int]:
    """The segment's scene pieces with keyframe and thumbnail blobs, and the bytes stored.

    Each keyframe is decoded scaled down, stored at once and let go, so memory holds one
    at a time. Frames past the maximum duration (too_long) or over the maximum picture
    size (picture_too_large) stop the work, whatever the file declared.
    """
    settings, store, segment = work.settings, work.blobs, work.segment
    analysis = detect_scenes(
        work.media,
        frame_width=settings.scene_frame_width_pixels,
        cut_threshold=settings.scene_cut_threshold,
        min_scene_seconds=settings.scene_min_seconds,
        max_seconds=settings.max_duration_seconds,
        max_pixels=settings.max_picture_pixels,
        deadline=work.deadline,
        start_seconds=segment.start_seconds,
        end_seconds=segment.end_seconds,
    )
    pieces: list[dict[str, Any]] = [
        {
            "start_seconds": scene.start_seconds,
            "end_seconds": scene.end_seconds,
            "keyframe_seconds": scene.keyframe_seconds,
            "opens_with_cut": scene.opens_with_cut,
            "sharpness": scene.sharpness,
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
        name = f"frames/{work.job_id}/{segment.index:04d}-{index:04d}"
        pieces[index]["keyframe_uri"] = store.put_bytes(keyframe, f"{name}.jpg")
        pieces[index]["thumbnail_uri"] = store.put_bytes(thumbnail, f"{name}_thumb.jpg")
        stored_bytes += len(keyframe) + len(thumbnail)
    return pieces, stored_bytes


def scenes(inbound: Inbound, ctx: HandlerContext, ready_topic: str) -> StageResult:
    """Store one segment's scenes; announce the job when this completes its join.

    Billed per second of the segment as ingest probed the media (to the millisecond),
    not by the time it took: the same media costs the same in every run.
    """
    value = inbound.value
    pieces: list[dict[str, Any]] = []
    stored = 0
    with ctx.blobs.local_path(str(value["media_uri"])) as media:
        work = media_work(ctx, inbound, media)
        segment = work.segment
        if value["has_video"]:
            with measure_cpu(ctx.stage, "local", "scenes"):
                pieces, stored = find_scenes(work)
    with ctx.transaction() as conn:
        save_scene_pieces(conn, inbound.job_id, segment.index, pieces)
        state = record_part(conn, inbound.job_id, SCENES, segment.index, segment.count)
        outputs = ready_outputs(conn, state, ctx, ready_topic)
    seconds = work.segment_seconds
    costs: list[Mapping[str, Any]] = [
        ctx.cost(f"scenes{segment.index}", "local", "scenes", "media_seconds", seconds)
    ]
    if stored:
        costs.append(ctx.cost(f"frames{segment.index}", "storage", "blob", "storage_bytes", stored))
    return StageResult(outputs=outputs, cost_events=costs)


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The scenes stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics("scenes", topics, group_id, lambda t: partial(scenes, ready_topic=t["output"]))


STAGE = build()
