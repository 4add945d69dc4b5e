"""Generated talks through ingest, preprocess, scenes and transcribe as real worker
processes.

A three-minute talk split into one-minute segments must come out as if whole: chunks
that tile the timeline and meet between sentences, scenes matching the planted cuts.
Two transcribe workers share a 20-minute talk's chunks; then one of them is stopped
and the same talk is submitted again, so the one-worker transcript is compared to
the two-worker one chunk by chunk.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest

from sinks.blobs import BlobStore
from sinks.scenes import job_scenes
from sinks.transcripts import job_chunks
from tests.fixtures.media import GeneratedMedia, LongMedia, MediaPipeline
from tests.inference.test_transcriber import wer
from tests.media.test_scenes import match_cuts

CHUNK_SECONDS = "30"
# The three-minute talk in three segments (the last one takes the remainder).
SEGMENT_SECONDS = "60"
# The 20-minute talk in the default 300 s segments.
SEGMENTS_OF_TWENTY = 4


def chunks_of(pipeline: MediaPipeline, job_id: str) -> list[dict[str, object]]:
    with pipeline.pool.connection() as conn:
        return job_chunks(conn, job_id)


def test_talk_through_the_pipeline(
    media_pipeline: MediaPipeline, generated_media: GeneratedMedia
) -> None:
    pipeline = media_pipeline
    env = {"VI_CHUNK_SECONDS": CHUNK_SECONDS, "VI_CHUNK_SEARCH_SECONDS": "5"}
    pipeline.start("ingest", VI_SEGMENT_SECONDS=SEGMENT_SECONDS)
    pipeline.start("preprocess", **env)
    pipeline.start("scenes")
    pipeline.start("transcribe")
    pipeline.start("transcribe")
    shared = f"job-{uuid.uuid4().hex[:8]}-talk"
    pipeline.submit(shared, pipeline.upload(generated_media.video, shared), language="en")

    [ready] = pipeline.read("ready", 1, timeout=180)
    segments = [m for m in pipeline.read("ingested", 3, timeout=5) if m["job_id"] == shared]
    assert sorted(m["segment_index"] for m in segments) == [0, 1, 2]
    assert {m["segment_count"] for m in segments} == {3}
    chunks = chunks_of(pipeline, shared)
    assert ready["job_id"] == shared
    assert ready["chunk_count"] == len(chunks) >= 6
    assert {c["segment_index"] for c in chunks} == {0, 1, 2}
    # The segments' chunks tile the video's audio: each ends where the next starts.
    assert chunks[0]["start_seconds"] == 0.0
    for before, after in itertools.pairwise(chunks):
        assert before["end_seconds"] == after["start_seconds"], (before, after)
    text = " ".join(str(c["text"]) for c in chunks)
    assert ready["word_count"] == len(text.split())
    assert wer(generated_media.speech.text, text) <= 0.15
    _assert_cuts_between_sentences(chunks, generated_media)
    _assert_words_on_the_video_timeline(chunks, generated_media)
    _assert_scenes(pipeline, shared, generated_media)
    _assert_costs(pipeline, shared, chunks)

    assert len(pipeline.read("ready", 2, timeout=8)) == 1  # exactly one TranscriptReady


def test_twenty_minutes_shared_by_two_workers_equals_one_worker(
    media_pipeline: MediaPipeline, long_media: LongMedia
) -> None:
    pipeline = media_pipeline
    pipeline.start("ingest")  # default segments of 300 s
    pipeline.start("preprocess")  # default chunks of about 60 s
    pipeline.start("scenes")
    first = pipeline.start("transcribe")
    pipeline.start("transcribe")
    pipeline.wait_for_members("transcribe", 2)  # else the first to join may take every chunk
    run = uuid.uuid4().hex[:8]
    shared, alone = f"job-{run}-two-workers", f"job-{run}-one-worker"
    pipeline.submit(shared, pipeline.upload(long_media.video, shared), language="en")
    [ready] = pipeline.read("ready", 1, timeout=300)
    two_workers = [(c["start_seconds"], c["text"]) for c in chunks_of(pipeline, shared)]
    assert ready["chunk_count"] == len(two_workers) >= 18
    text = " ".join(str(t) for _, t in two_workers)
    assert wer(long_media.speech.text, text) <= 0.15
    assert _run_keys_by_worker(pipeline, shared) == 2  # both workers took chunks

    first.kill()
    pipeline.submit(alone, pipeline.upload(long_media.video, alone), language="en")
    assert len(pipeline.read("ready", 2, timeout=300)) == 2
    one_worker = [(c["start_seconds"], c["text"]) for c in chunks_of(pipeline, alone)]
    assert one_worker == two_workers
    assert len(pipeline.read("ready", 3, timeout=8)) == 2
    # Each job: ingest's probe; per segment each branch's media and blobs; one line per chunk.
    costs = pipeline.read("costs", 2 * (1 + 4 * SEGMENTS_OF_TWENTY + len(two_workers)), timeout=60)
    assert _bill(costs, alone) == _bill(costs, shared)  # the same talk, the same bill


def _bill(events: list[dict[str, Any]], job_id: str) -> list[tuple[Any, ...]]:
    """A job's cost lines without what names the job or the moment."""
    return sorted(
        (e["stage"], e["provider"], e["model"], e["unit"], e["quantity"], e["amount_usd_micros"])
        for e in events
        if e["job_id"] == job_id
    )


def _run_keys_by_worker(pipeline: MediaPipeline, job_id: str) -> int:
    """How many transcribe worker processes logged a finished chunk of ``job_id``."""
    return sum(
        1
        for worker in pipeline.workers
        if worker.name.startswith("transcribe") and job_id in worker.log_path.read_text()
    )


def _assert_cuts_between_sentences(chunks: list[dict[str, object]], media: GeneratedMedia) -> None:
    for chunk in chunks[1:]:
        cut = float(str(chunk["start_seconds"]))
        inside = [s for s, e, _ in media.speech.sentences if s - 0.05 <= cut <= e + 0.05]
        assert inside == [], f"chunk boundary {cut:.2f} s is inside a sentence"


def _assert_words_on_the_video_timeline(
    chunks: list[dict[str, object]], media: GeneratedMedia
) -> None:
    """The first word of each chunk is spoken in a sentence near that time of the video."""
    for chunk in chunks:
        segments = chunk["segments"]
        assert isinstance(segments, list)
        first_word = segments[0]["words"][0]
        assert any(
            s - 0.6 <= first_word["start"] <= e + 0.6 for s, e, _ in media.speech.sentences
        ), first_word
        assert first_word["start"] >= float(str(chunk["start_seconds"])) - 0.1


def _assert_scenes(pipeline: MediaPipeline, job_id: str, media: GeneratedMedia) -> None:
    with pipeline.pool.connection() as conn:
        scenes = job_scenes(conn, job_id)
    cuts = [float(s["start_seconds"]) for s in scenes[1:]]
    precision, recall = match_cuts(cuts, media.cut_times)
    assert (precision, recall) >= (0.9, 0.9), cuts
    store = BlobStore.from_settings(pipeline.settings)
    for scene in scenes:
        for column in ("keyframe_uri", "thumbnail_uri"):
            path: Path = store.local_file(scene[column])
            assert path.read_bytes()[:2] == b"\xff\xd8", scene


def _assert_costs(pipeline: MediaPipeline, job_id: str, chunks: list[dict[str, object]]) -> None:
    events = [e for e in pipeline.read("costs", 100, timeout=5) if e["job_id"] == job_id]
    by_stage: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_stage.setdefault(str(event["stage"]), []).append(event)
    assert len({e["event_id"] for e in events}) == len(events)  # no duplicates
    assert len(by_stage["transcribe"]) == len(chunks)
    for branch in ("preprocess", "scenes"):
        assert {e["unit"] for e in by_stage[branch]} == {"media_seconds", "storage_bytes"}
    assert {e["model"] for e in by_stage["transcribe"]} == {"faster-whisper-tiny.en"}
    # Local work is billed by its input: the media's probed length (each branch per
    # segment, adding up to it), each chunk's audio.
    [probe] = by_stage["ingest"]
    assert probe["unit"] == "media_seconds"
    for branch in ("preprocess", "scenes"):
        billed = [
            float(str(e["quantity"])) for e in by_stage[branch] if e["unit"] == "media_seconds"
        ]
        assert sum(billed) == pytest.approx(float(str(probe["quantity"])), abs=0.002), branch
    spans = [
        round(float(str(c["end_seconds"])) - float(str(c["start_seconds"])), 3) for c in chunks
    ]
    assert sorted(float(str(e["quantity"])) for e in by_stage["transcribe"]) == sorted(spans)
    assert {e["unit"] for e in by_stage["transcribe"]} == {"audio_seconds"}
    assert all(e["customer_id"] == "cust-media" for e in events)
    assert sum(int(str(e["amount_usd_micros"])) for e in events) > 0
