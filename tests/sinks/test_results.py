"""Stage results: redelivery rewrites one row, the last chunk is noticed, tenants stay apart."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from sinks import insights, jobs, llm_cache, scenes, transcripts
from sinks.db import Connection, Pool, transaction
from sinks.transcripts import ChunkProgress


def _record(conn: Connection, job_id: str, index: int, count: int = 2) -> ChunkProgress:
    return transcripts.record_chunk(
        conn,
        job_id=job_id,
        chunk_index=index,
        chunk_count=count,
        start_seconds=30.0 * index,
        end_seconds=30.0 * (index + 1),
        text=f"chunk {index}",
        segments=[{"start": 0.0, "end": 1.0, "text": f"chunk {index}"}],
        language="en",
    )


def test_a_redelivered_chunk_is_stored_once(db: Connection) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    first = _record(db, job_id, 0)
    again = _record(db, job_id, 0)
    assert (first.created, first.received, first.complete) == (True, 1, False)
    assert (again.created, again.received) == (False, 1)
    last = _record(db, job_id, 1)
    assert last.complete
    assert [c["text"] for c in transcripts.job_chunks(db, job_id)] == ["chunk 0", "chunk 1"]


def test_two_last_chunks_landing_together_still_complete_the_transcript(db_pool: Pool) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    later: list[ChunkProgress] = []

    def record_other_chunk() -> None:
        with transaction(db_pool) as conn:
            later.append(_record(conn, job_id, 1))

    with transaction(db_pool) as conn:
        earlier = _record(conn, job_id, 0)
        other = threading.Thread(target=record_other_chunk)
        other.start()
        time.sleep(0.3)
        assert later == []  # waits for this transaction's chunk rather than miss it
    other.join(timeout=10)
    assert not earlier.complete
    assert [p.complete for p in later] == [True]


def test_insights_are_upserted_and_visible_only_to_their_customer(db: Connection) -> None:
    owner, job_id = f"cus_{uuid.uuid4().hex}", f"job_{uuid.uuid4().hex}"
    jobs.create_job(db, job_id=job_id, customer_id=owner, source_uri="blob://v.mp4")
    insights.save_insight(db, job_id, {"summary": "draft"}, "1", "WEBVTT\n", None)
    insights.save_insight(db, job_id, {"summary": "final"}, "1", "WEBVTT\n\n", "1\n")
    row = insights.get_insight(db, job_id, owner)
    assert row is not None and row["document"] == {"summary": "final"}
    assert insights.get_insight(db, job_id, f"cus_{uuid.uuid4().hex}") is None
    count = db.execute("SELECT count(*) AS n FROM insights WHERE job_id = %s", (job_id,))
    assert count.fetchone() == {"n": 1}
    insights.save_analysis(db, job_id, {"topics": ["a"]}, "extractive", "v1")
    insights.save_analysis(db, job_id, {"topics": ["b"]}, "extractive", "v2")
    analysis = insights.get_analysis(db, job_id)
    assert analysis is not None and analysis["prompt_version"] == "v2"


def test_rerunning_scene_detection_replaces_the_scenes(db: Connection) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    cuts: list[dict[str, Any]] = [
        {"start_seconds": 0.0, "end_seconds": 4.0, "keyframe_uri": "blob://k0.jpg"},
        {"start_seconds": 4.0, "end_seconds": 9.5, "keyframe_uri": "blob://k1.jpg"},
        {"start_seconds": 9.5, "end_seconds": 12.0},
    ]
    scenes.save_scenes(db, job_id, cuts)
    scenes.save_scenes(db, job_id, cuts[:2])
    stored = scenes.job_scenes(db, job_id)
    assert [(s["scene_index"], s["end_seconds"]) for s in stored] == [(0, 4.0), (1, 9.5)]


def test_the_first_cached_response_wins_with_its_costs_and_hits_are_counted(
    db: Connection,
) -> None:
    key = f"llm_{uuid.uuid4().hex}"
    paid = [{"event_id": "e1", "amount_usd_micros": 21, "quantity": 110.0}]
    assert llm_cache.get_cached(db, key) is None
    assert llm_cache.put_cached(db, key, "extractive", {"answer": 1}, paid)
    assert not llm_cache.put_cached(db, key, "extractive", {"answer": 2}, [])
    first = llm_cache.CachedAnswer({"answer": 1}, paid)
    assert llm_cache.get_cached(db, key) == first
    assert llm_cache.get_cached(db, key) == first
    hits = db.execute("SELECT hits FROM llm_cache WHERE cache_key = %s", (key,)).fetchone()
    assert hits == {"hits": 2}
