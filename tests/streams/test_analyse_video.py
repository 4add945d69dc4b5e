"""The whole pipeline on a generated video whose script is known: a spoken meeting about
two topics, with named people given tasks, becomes a completed job whose insights name
those topics and owners and whose captions say what the transcript says.

Every stage runs as a real worker process (ingest, preprocess, transcribe, analyse,
synthesise) with the offline defaults: faster-whisper tiny.en and ``local/extractive``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media.tools import run_ffmpeg
from schemas.codec import Codec
from sinks.db import Pool, transaction
from sinks.insights import get_insight
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.media import ESPEAK_RATE_HZ, FPS, SIZE, MediaPipeline, speak, write_wav
from tests.streams.test_analyse import (
    AnalysisPipeline,
    assert_captions_match,
    new_analysis_pipeline,
)
from vidinsight.settings import Settings

ATLAS = [
    "Welcome to the Falcon launch review.",
    "The Falcon launch depends on the supplier contracts.",
    "Maria will send the launch budget to finance by Friday.",
    "The supplier contracts for the Falcon launch are almost signed.",
]
HIRING = [
    "Now the hiring plan for the data team.",
    "The data team needs two engineers for the analytics platform.",
    "Peter will interview the engineers next week.",
    "Hiring engineers for the data team is the priority.",
]
PAUSE_SECONDS = 0.8


def meeting_video(folder: Path) -> tuple[Path, float]:
    """The meeting read aloud over two scenes that change where the topic does."""
    silence = np.zeros(int(PAUSE_SECONDS * ESPEAK_RATE_HZ), dtype=np.int16)
    pieces, cut = [silence], 0.0
    for index, sentence in enumerate([*ATLAS, *HIRING]):
        if index == len(ATLAS):
            cut = sum(len(p) for p in pieces) / ESPEAK_RATE_HZ - PAUSE_SECONDS / 2
        pieces += [speak(sentence, folder / "sentence.wav"), silence]
    speech = np.concatenate(pieces)
    duration = round(len(speech) / ESPEAK_RATE_HZ + 1.0, 2)
    write_wav(folder / "meeting.wav", speech, ESPEAK_RATE_HZ)
    target = folder / "meeting.mp4"
    scenes = [("testsrc2", cut), ("smptehdbars", duration - cut)]
    inputs = [
        arg
        for source, seconds in scenes
        for arg in ("-t", f"{seconds:.3f}", "-f", "lavfi", "-i", f"{source}=size={SIZE}:rate={FPS}")
    ]
    _mux(inputs, folder / "meeting.wav", duration, target)
    return target, duration


def _mux(inputs: list[str], wav: Path, duration: float, target: Path) -> None:
    chain = (
        "[0:v]format=yuv420p,setsar=1[a];[1:v]format=yuv420p,setsar=1[b];"
        "[a][b]concat=n=2:v=1:a=0[v]"
    )
    run_ffmpeg(
        [
            *inputs, "-i", str(wav), "-filter_complex", chain, "-map", "[v]", "-map", "2:a",
            "-af", f"apad=whole_dur={duration}", "-t", str(duration),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-c:a", "aac", "-b:a", "64k",
            str(target),
        ]
    )  # fmt: skip


@pytest.fixture
def analysis_pipeline(
    settings: Settings, codec: Codec, db_pool: Pool, topic_factory: TopicFactory, tmp_path: Path
) -> Iterator[AnalysisPipeline]:
    pipeline = new_analysis_pipeline(settings, codec, db_pool, topic_factory, tmp_path)
    yield pipeline
    for worker in pipeline.workers:
        worker.kill()


def test_a_generated_meeting_becomes_insights_with_its_topics_and_owners(
    media_pipeline: MediaPipeline, analysis_pipeline: AnalysisPipeline, tmp_path: Path
) -> None:
    video, duration = meeting_video(tmp_path)
    analysis_pipeline.topics["ready"] = media_pipeline.topics["ready"]
    for stage in ("ingest", "preprocess", "transcribe"):
        media_pipeline.start(stage)
    analysis_pipeline.start("analyse")
    analysis_pipeline.start("synthesise")
    job_id = f"job-{uuid.uuid4().hex[:8]}-meeting"
    media_pipeline.submit(job_id, media_pipeline.upload(video, job_id), language="en")

    analysis_pipeline.wait_job(job_id, "completed", timeout=150)
    with transaction(analysis_pipeline.pool) as conn:
        row = get_insight(conn, job_id)
    assert row is not None
    document = row["document"]
    keywords = {k.lower() for k in document["keywords"]}
    # Terms tiny.en hears right in espeak-ng speech ("supplier" comes out "supply").
    assert {"falcon", "launch", "contracts", "engineers"} <= keywords, keywords
    assert "Falcon" in document["summary"], document["summary"]
    items = document["action_items"]
    assert {item["owner"] for item in items} == {"Maria", "Peter"}, items
    chapters = document["chapters"]
    assert chapters[0]["start_seconds"] == 0.0
    assert abs(chapters[-1]["end_seconds"] - duration) < 0.5
    for before, after in itertools.pairwise(chapters):
        assert before["end_seconds"] == after["start_seconds"] < after["end_seconds"]
    assert_captions_match(row["captions_vtt"], row["captions_srt"], document["transcript"])
