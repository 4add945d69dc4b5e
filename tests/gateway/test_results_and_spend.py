"""Insights, captions, keyframes and spend as a customer reads them over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sinks.db import Pool, transaction
from sinks.insights import save_insight
from sinks.jobs import set_status
from sinks.ledger import CostEvent, record_cost_events
from sinks.scenes import save_scenes
from tests.gateway.conftest import Customer, RunningGateway

VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nhello world\n"
SRT = "1\n00:00:00,000 --> 00:00:02,000\nhello world\n"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
DOCUMENT = {
    "transcript": {
        "text": "hello world",
        "segments": [{"start": 0, "end": 2, "text": "hello world"}],
    },
    "summary": "A greeting.",
    "chapters": [{"start": 0, "end": 2, "title": "Hello"}],
    "keywords": ["hello"],
    "action_items": [],
    "sentiment": {"label": "positive", "score": 0.9},
    "language": "en",
}


def submit(gateway: RunningGateway, customer: Customer) -> str:
    with gateway.client(customer) as client:
        answer = client.post("/v1/jobs", json={"source_url": "https://example.com/a.mp4"})
    assert answer.status_code == 202
    return str(answer.json()["job_id"])


def complete(gateway: RunningGateway, pool: Pool, job_id: str) -> None:
    """What the pipeline leaves behind for a finished job: insights, captions, scenes."""
    keyframe = gateway.settings.state_dir / "blobs" / "keyframes" / job_id / "0.jpg"
    keyframe.parent.mkdir(parents=True, exist_ok=True)
    keyframe.write_bytes(JPEG)
    with transaction(pool) as conn:
        save_insight(conn, job_id, DOCUMENT, "1", captions_vtt=VTT, captions_srt=SRT)
        save_scenes(
            conn,
            job_id,
            [
                {"start_seconds": 0.0, "end_seconds": 1.5, "keyframe_uri": keyframe.as_uri()},
                {"start_seconds": 1.5, "end_seconds": 2.0, "keyframe_uri": "file:///etc/passwd"},
            ],
        )
        set_status(conn, job_id, "completed")


def test_results_are_409_until_completed_then_served(
    gateway: RunningGateway, customer: Customer, other_customer: Customer, db_pool: Pool
) -> None:
    job_id = submit(gateway, customer)
    paths = [
        f"/v1/jobs/{job_id}/insights",
        f"/v1/jobs/{job_id}/captions.vtt",
        f"/v1/jobs/{job_id}/captions.srt",
        f"/v1/jobs/{job_id}/keyframes/0.jpg",
    ]
    with gateway.client(customer) as client:
        for path in paths:
            early = client.get(path)
            assert early.status_code == 409, path
            assert early.json()["error"]["reason"] == "job_not_completed"
    complete(gateway, db_pool, job_id)
    with gateway.client(customer) as client:
        document = client.get(paths[0]).json()
        vtt = client.get(paths[1])
        srt = client.get(paths[2])
        frame = client.get(paths[3])
        outside_blobs = client.get(f"/v1/jobs/{job_id}/keyframes/1.jpg")
        missing = client.get(f"/v1/jobs/{job_id}/keyframes/7.jpg")
    assert document["transcript"]["segments"] == [{"start": 0, "end": 2, "text": "hello world"}]
    assert document["summary"] == "A greeting."
    assert document["sentiment"] == {"label": "positive", "score": 0.9}
    assert document["language"] == "en"
    assert document["scenes"][0] == {
        "index": 0,
        "start": 0.0,
        "end": 1.5,
        "keyframe_url": f"/v1/jobs/{job_id}/keyframes/0.jpg",
    }
    assert vtt.text == VTT and vtt.headers["content-type"].startswith("text/vtt")
    assert srt.text == SRT and srt.headers["content-type"].startswith("application/x-subrip")
    assert frame.content == JPEG and frame.headers["content-type"] == "image/jpeg"
    assert outside_blobs.status_code == 404
    assert missing.status_code == 404
    with gateway.client(other_customer) as client:
        for path in paths:
            assert client.get(path).status_code == 404, path


def cost(customer: Customer, job_id: str, stage: str, micros: int, when: datetime) -> CostEvent:
    return CostEvent(
        event_id=f"evt_{uuid.uuid4().hex}",
        customer_id=customer.customer_id,
        job_id=job_id,
        stage=stage,
        provider="local",
        model="tiny.en",
        unit="second",
        quantity=10.0,
        amount_usd_micros=micros,
        occurred_at=when,
    )


def test_job_costs_and_usage_by_day_and_stage(
    gateway: RunningGateway, customer: Customer, other_customer: Customer, db_pool: Pool
) -> None:
    job_id = submit(gateway, customer)
    other_job = submit(gateway, customer)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    with transaction(db_pool) as conn:
        record_cost_events(
            conn,
            [
                cost(customer, job_id, "transcribe", 1_250_000, yesterday),
                cost(customer, job_id, "transcribe", 250_001, today),
                cost(customer, job_id, "analyse", 3, today),
                cost(customer, other_job, "analyse", 1_000_000, today),
            ],
        )
    with gateway.client(customer) as client:
        costs = client.get(f"/v1/jobs/{job_id}/costs").json()
        days = {"from": yesterday.date().isoformat(), "to": today.date().isoformat()}
        usage = client.get("/v1/usage", params=days).json()
        today_only = client.get("/v1/usage", params={"from": today.date().isoformat()}).json()
        backwards = client.get("/v1/usage", params={"from": days["to"], "to": days["from"]})
    assert costs["total_usd_micros"] == 1_500_004
    assert costs["total_usd"] == 1.500004
    assert costs["by_stage"] == {"analyse": 0.000003, "transcribe": 1.500001}
    amounts = [e["amount_usd_micros"] for e in costs["events"]]
    assert amounts[0] == 1_250_000  # oldest first
    assert sorted(amounts) == [3, 250_001, 1_250_000]
    assert {e["stage"] for e in costs["events"]} == {"transcribe", "analyse"}
    assert usage["total_usd_micros"] == 2_500_004
    assert [d["day"] for d in usage["days"]] == [
        yesterday.date().isoformat(),
        today.date().isoformat(),
    ]
    assert usage["days"][0]["by_stage"] == {"transcribe": 1.25}
    assert usage["days"][1]["by_stage"] == {"analyse": 1.000003, "transcribe": 0.250001}
    assert today_only["total_usd_micros"] == 1_250_004
    assert backwards.status_code == 422
    with gateway.client(other_customer) as client:
        assert client.get(f"/v1/jobs/{job_id}/costs").status_code == 404
        assert client.get("/v1/usage").json()["total_usd_micros"] == 0
