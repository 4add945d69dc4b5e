"""The whole pipeline on a generated video whose script is known: a spoken meeting about
two topics, with named people given tasks, becomes a completed job whose insights name
those topics and owners and whose captions say what the transcript says.

Every stage runs as a real worker process (ingest, preprocess, transcribe, analyse,
synthesise) with the offline defaults: faster-whisper tiny.en and ``local/extractive``.
"""

from __future__ import annotations

import itertools
import uuid

from sinks.db import transaction
from sinks.insights import get_insight
from tests.fixtures.media import MediaPipeline
from tests.fixtures.meeting import KEY_TERMS, OWNERS, Meeting
from tests.streams.test_analyse import (
    AnalysisPipeline,
    assert_captions_match,
)


def test_a_generated_meeting_becomes_insights_with_its_topics_and_owners(
    media_pipeline: MediaPipeline, analysis_pipeline: AnalysisPipeline, meeting: Meeting
) -> None:
    video, duration = meeting.video, meeting.duration_seconds
    analysis_pipeline.topics["ready"] = media_pipeline.topics["ready"]
    for stage in ("ingest", "preprocess", "scenes", "transcribe"):
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
    assert keywords >= KEY_TERMS, keywords
    assert "Falcon" in document["summary"], document["summary"]
    items = document["action_items"]
    assert {item["owner"] for item in items} == OWNERS, items
    chapters = document["chapters"]
    # Two topics, and the chapter boundary on the scene cut where the topic changes.
    assert len(chapters) == 2, chapters
    assert abs(chapters[1]["start_seconds"] - meeting.cut_seconds) < 1.0, chapters
    assert chapters[0]["start_seconds"] == 0.0
    assert abs(chapters[-1]["end_seconds"] - duration) < 0.5
    for before, after in itertools.pairwise(chapters):
        assert before["end_seconds"] == after["start_seconds"] < after["end_seconds"]
    assert_captions_match(row["captions_vtt"], row["captions_srt"], document["transcript"])
