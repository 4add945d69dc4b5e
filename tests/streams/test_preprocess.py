"""Preprocess and scenes, the two branches after ingest, as real workers on awkward but
valid media."""

from __future__ import annotations

import uuid

import pytest

from sinks.scenes import job_scenes
from tests.fixtures.media import GeneratedMedia, HostileMedia, MediaPipeline

CASES = {
    "no_audio.mp4": {"chunks": 0, "scenes": True},
    "silent.mp4": {"chunks": 1, "scenes": True},
    "portrait_51.mp4": {"chunks": 1, "scenes": True},
    "vfr.mp4": {"chunks": 0, "scenes": True},
    "audio_only.m4a": {"chunks": 1, "scenes": False},
}


def test_awkward_media_is_preprocessed(
    media_pipeline: MediaPipeline, generated_media: GeneratedMedia
) -> None:
    """No audio: no chunks, and an empty transcript once the scenes are stored;
    audio-only: chunks, no scenes."""
    pipeline = media_pipeline
    for stage in ("ingest", "preprocess", "scenes"):
        pipeline.start(stage)
    run = uuid.uuid4().hex[:8]
    jobs = {f"job-{run}-{name}": name for name in CASES}
    for job_id, name in jobs.items():
        options = {"language": "en"} if name == "portrait_51.mp4" else {}
        pipeline.submit(job_id, pipeline.upload(generated_media.file(name), job_id), **options)
    expected_chunks = sum(case["chunks"] for case in CASES.values())
    chunks = pipeline.read("chunks", expected_chunks, timeout=90)
    readies = pipeline.read("ready", 2, timeout=30)
    assert sorted(r["job_id"] for r in readies) == sorted(
        job_id for job_id, name in jobs.items() if CASES[name]["chunks"] == 0
    )
    assert all(r["chunk_count"] == 0 and r["word_count"] == 0 for r in readies)
    by_job = {c["job_id"]: c for c in chunks}
    for job_id, name in jobs.items():
        case = CASES[name]
        if case["chunks"]:
            chunk = by_job[job_id]
            assert (chunk["chunk_index"], chunk["chunk_count"]) == (0, 1)
            # The job's language option reaches the transcriber through each chunk.
            assert chunk["language"] == ("en" if name == "portrait_51.mp4" else None)
            assert chunk["end_seconds"] == pytest.approx(4.0, abs=0.1)
        with pipeline.pool.connection() as conn:
            scenes = job_scenes(conn, job_id)
        assert bool(scenes) is case["scenes"], (name, scenes)
        if scenes:
            assert scenes[0]["keyframe_uri"] and scenes[0]["thumbnail_uri"]
    assert len(pipeline.read("chunks", expected_chunks + 1, timeout=5)) == expected_chunks


def test_preprocess_stops_media_longer_than_it_was_taken_for(
    media_pipeline: MediaPipeline, hostile_media: HostileMedia
) -> None:
    """Preprocess measures what it decodes: a file ingest let through (the maximum was
    lowered since, or the file fooled it) fails too_long at the maximum, not after it."""
    pipeline = media_pipeline
    pipeline.start("ingest")
    pipeline.start("preprocess", VI_MAX_DURATION_SECONDS="8")
    job_id = f"job-{uuid.uuid4().hex[:8]}-lying"
    pipeline.submit(job_id, pipeline.upload(hostile_media.file("lying.mkv"), job_id))
    job = pipeline.wait_job(job_id, ("failed",))
    assert (job["error_stage"], job["error_reason"]) == ("preprocess", "too_long")
    assert "longer than the maximum of 8 s" in job["error_message"]
    assert not any(part in job["error_message"] for part in ("/work", ".state", "/tmp"))
    assert pipeline.read("chunks", 1, timeout=3) == []
