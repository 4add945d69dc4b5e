"""Stage results: redelivery rewrites one row, the join of a job's branches is noticed
once whatever the order, scenes split by a segment border are joined, tenants stay apart."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sinks import insights, jobs, join, llm_cache, scenes, transcripts
from sinks.db import Connection, Pool, transaction
from sinks.join import JoinState


def _record(conn: Connection, job_id: str, index: int, segment: int = 0) -> JoinState:
    return transcripts.record_chunk(
        conn,
        job_id=job_id,
        segment_index=segment,
        chunk_index=index,
        chunk_count=2,
        start_seconds=30.0 * index,
        end_seconds=30.0 * (index + 1),
        text=f"chunk {index}",
        segments=[{"start": 0.0, "end": 1.0, "text": f"chunk {index}"}],
        language="en",
    )


def test_a_redelivered_chunk_is_stored_once(db: Connection) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    join.record_part(db, job_id, join.AUDIO, 0, 1, chunk_count=2)
    join.record_part(db, job_id, join.SCENES, 0, 1)
    first = _record(db, job_id, 0)
    again = _record(db, job_id, 0)
    assert (first.chunks_transcribed, first.ready) == (1, False)
    assert (again.chunks_transcribed, again.ready) == (1, False)
    assert _record(db, job_id, 1).ready
    assert [c["text"] for c in transcripts.job_chunks(db, job_id)] == ["chunk 0", "chunk 1"]


def test_the_join_is_ready_at_its_last_part_in_any_order(db: Connection) -> None:
    """Two segments: the first cut into one chunk, the second silent; each branch records
    each segment. Whatever the order (a chunk after the cut it came from), only the last
    record finds the job ready, and a redelivered record after it finds it ready again."""
    parts: dict[str, Callable[[str], JoinState]] = {
        "audio0": lambda j: join.record_part(db, j, join.AUDIO, 0, 2, chunk_count=1),
        "audio1": lambda j: join.record_part(db, j, join.AUDIO, 1, 2, chunk_count=0),
        "scenes0": lambda j: join.record_part(db, j, join.SCENES, 0, 2),
        "scenes1": lambda j: join.record_part(db, j, join.SCENES, 1, 2),
        "chunk0.0": lambda j: _record(db, j, 0, segment=0),
    }
    orders = [
        order
        for order in itertools.permutations(parts)
        if order.index("audio0") < order.index("chunk0.0")
    ]
    assert len(orders) == 60
    for order in orders:
        job_id = f"job_{uuid.uuid4().hex}"
        readiness = [parts[name](job_id).ready for name in order]
        assert readiness == [False] * 4 + [True], order
        assert parts[order[0]](job_id).ready  # a redelivery announces again


def test_only_the_run_that_completed_the_join_announces_it(db: Connection) -> None:
    """A part redelivered after the join (its worker killed before the message was marked
    done) finds the job ready too; it must not announce a second time, while the run
    that claimed the announcement, redelivered itself, announces again."""
    job_id = f"job_{uuid.uuid4().hex}"
    join.record_part(db, job_id, join.AUDIO, 0, 1, chunk_count=2)
    join.record_part(db, job_id, join.SCENES, 0, 1)
    _record(db, job_id, 0)
    assert _record(db, job_id, 1).ready
    assert join.claim_announcement(db, job_id, "transcribe:job:0:1")
    assert _record(db, job_id, 0).ready  # the first chunk, redelivered
    assert not join.claim_announcement(db, job_id, "transcribe:job:0:0")
    assert join.claim_announcement(db, job_id, "transcribe:job:0:1")


def test_two_last_parts_landing_together_still_complete_the_join(db_pool: Pool) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    with transaction(db_pool) as conn:
        join.record_part(conn, job_id, join.AUDIO, 0, 1, chunk_count=1)
    later: list[JoinState] = []

    def record_the_chunk() -> None:
        with transaction(db_pool) as conn:
            later.append(_record(conn, job_id, 0))

    with transaction(db_pool) as conn:
        earlier = join.record_part(conn, job_id, join.SCENES, 0, 1)
        other = threading.Thread(target=record_the_chunk)
        other.start()
        time.sleep(0.3)
        assert later == []  # waits for this transaction's part rather than miss it
    other.join(timeout=10)
    assert not earlier.ready
    assert [state.ready for state in later] == [True]


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


def _piece(start: float, end: float, opens: bool, sharpness: float) -> dict[str, Any]:
    uri = f"blob://frame-{start}.jpg"
    return {"start_seconds": start, "end_seconds": end, "keyframe_uri": uri,
            "thumbnail_uri": uri, "opens_with_cut": opens, "sharpness": sharpness}  # fmt: skip


def test_a_scene_split_by_a_segment_border_is_read_whole(db: Connection) -> None:
    """Segments stored out of order; the scene across the 300 s border keeps the keyframe
    of its sharper piece, and a cut right on the border starts a scene of its own."""
    job_id = f"job_{uuid.uuid4().hex}"
    scenes.save_scene_pieces(db, job_id, 2, [_piece(600.0, 700.0, True, 5.0)])
    scenes.save_scene_pieces(
        db, job_id, 1, [_piece(300.0, 350.0, False, 9.0), _piece(350.0, 600.0, True, 1.0)]
    )
    scenes.save_scene_pieces(db, job_id, 0, [_piece(0.0, 300.0, True, 2.0)])
    stored = scenes.job_scenes(db, job_id)
    assert [(s["scene_index"], s["start_seconds"], s["end_seconds"]) for s in stored] == [
        (0, 0.0, 350.0),
        (1, 350.0, 600.0),
        (2, 600.0, 700.0),
    ]
    assert stored[0]["keyframe_uri"] == "blob://frame-300.0.jpg"  # the sharper piece's


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
