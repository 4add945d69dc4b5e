"""Jobs over real HTTP: submit through the outbox to Kafka, status, list, cancel, tenancy."""

from __future__ import annotations

import time
import uuid

import pytest

from schemas.codec import Codec
from sinks.db import Pool, transaction
from sinks.jobs import fail_job, get_job, set_status
from sinks.stage_runs import RunOutcome, RunStart, begin, finish_runs
from tests.fixtures.kafka import consume_from
from tests.gateway.conftest import Customer, GatewayFactory, RunningGateway

MEDIA = {"Content-Type": "video/mp4"}


def upload(gateway: RunningGateway, customer: Customer) -> str:
    with gateway.client(customer) as client:
        answer = client.post("/v1/uploads", content=b"\x00fake-mp4" * 100, headers=MEDIA)
    assert answer.status_code == 201
    return str(answer.json()["upload_id"])


def submit(gateway: RunningGateway, customer: Customer, **body: object) -> str:
    with gateway.client(customer) as client:
        answer = client.post("/v1/jobs", json=body or {"source_url": "https://example.com/a.mp4"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    return str(answer.json()["job_id"])


def test_submitted_job_is_on_the_topic_and_marked_published(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool, codec: Codec
) -> None:
    # Webhook receivers must be public; this gateway lets loopback through, as a test would.
    gateway = gateway_factory(fetch_allowed_networks="127.0.0.0/8")
    upload_id = upload(gateway, customer)
    job_id = submit(
        gateway,
        customer,
        upload_id=upload_id,
        webhook_url="http://127.0.0.1:9/done",
        options={"language": "en"},
    )
    topic = gateway.settings.gateway_jobs_topic
    messages = consume_from(gateway.settings.kafka_bootstrap, topic, 1, timeout=20)
    assert len(messages) == 1
    assert messages[0].key() == job_id.encode()
    record = codec.decode(topic, messages[0].value())
    assert record["customer_id"] == customer.customer_id
    assert record["source_uri"].startswith("file://")
    assert record["source_uri"].endswith(upload_id)
    assert record["webhook_url"] == "http://127.0.0.1:9/done"
    assert record["options"] == {"language": "en"}
    assert published_soon(db_pool, job_id)


def published_soon(pool: Pool, job_id: str, within_seconds: float = 5.0) -> bool:
    """Whether the job's row is stamped published (the ack is marked asynchronously)."""
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        with transaction(pool) as conn:
            row = get_job(conn, job_id)
        if row is not None and row["published_at"] is not None:
            return True
        time.sleep(0.05)
    return False


def test_job_status_shows_stages_progress_and_error(
    gateway: RunningGateway, customer: Customer, db_pool: Pool
) -> None:
    job_id = submit(gateway, customer)
    with gateway.client(customer) as client:
        fresh = client.get(f"/v1/jobs/{job_id}").json()
    assert fresh["status"] == "queued"
    assert fresh["stages"] == {}
    assert fresh["progress"] == 0
    assert fresh["error"] is None

    with transaction(db_pool) as conn:
        set_status(conn, job_id, "running")
        start = RunStart(f"{job_id}-ingest", job_id, customer.customer_id, "t", 0, 1)
        begin(conn, "ingest", start, honours_cancel=False)
        begin(conn, "ingest", start, honours_cancel=False)
        done = RunOutcome(f"{job_id}-ingest", job_id, customer.customer_id, "succeeded", 2, [])
        finish_runs(conn, "ingest", [done])
        begin(conn, "preprocess", RunStart(job_id, job_id, None, "t", 0, 2), False)
    with gateway.client(customer) as client:
        running = client.get(f"/v1/jobs/{job_id}").json()
        listed = client.get("/v1/jobs").json()["jobs"]
    assert [job for job in listed if job["job_id"] == job_id] == [running]
    assert running["status"] == "running"
    assert running["stages"]["ingest"]["status"] == "succeeded"
    assert running["stages"]["ingest"]["attempts"] == 2
    assert running["stages"]["ingest"]["finished_at"] is not None
    assert running["stages"]["preprocess"]["status"] == "running"
    assert running["stages"]["preprocess"]["finished_at"] is None
    assert running["progress"] == pytest.approx(1 / 6, abs=1e-4)  # ingest, of six stages

    with transaction(db_pool) as conn:
        fail_job(conn, job_id, "preprocess", "corrupt_media", "moov atom not found")
    with gateway.client(customer) as client:
        failed = client.get(f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "reason": "corrupt_media",
        "message": "moov atom not found",
        "stage": "preprocess",
    }


def test_list_pages_with_a_cursor_and_filters_by_status(
    gateway: RunningGateway, customer: Customer, db_pool: Pool
) -> None:
    submitted = [submit(gateway, customer) for _ in range(5)]
    with transaction(db_pool) as conn:
        set_status(conn, submitted[0], "cancelled")
    seen: list[str] = []
    cursor = None
    with gateway.client(customer) as client:
        for _ in range(5):
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/jobs", params=params).json()
            seen += [job["job_id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
        bad_cursor = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert seen == list(reversed(submitted))
    assert [job["job_id"] for job in cancelled["jobs"]] == [submitted[0]]
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["error"]["reason"] == "invalid_request"


def test_cancel_moves_a_job_to_cancelled_once(
    gateway: RunningGateway, customer: Customer, db_pool: Pool
) -> None:
    job_id = submit(gateway, customer)
    finished = submit(gateway, customer)
    with transaction(db_pool) as conn:
        set_status(conn, finished, "completed")
    with gateway.client(customer) as client:
        first = client.delete(f"/v1/jobs/{job_id}")
        again = client.delete(f"/v1/jobs/{job_id}")
        too_late = client.delete(f"/v1/jobs/{finished}")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert too_late.status_code == 409
    assert too_late.json()["error"]["reason"] == "conflict"


def test_another_customers_job_and_upload_are_404(
    gateway: RunningGateway, customer: Customer, other_customer: Customer
) -> None:
    job_id = submit(gateway, customer)
    upload_id = upload(gateway, customer)
    with gateway.client(other_customer) as client:
        answers = [
            client.get(f"/v1/jobs/{job_id}"),
            client.delete(f"/v1/jobs/{job_id}"),
            client.post("/v1/jobs", json={"upload_id": upload_id}),
            client.get(f"/v1/jobs/job_{uuid.uuid4().hex}"),
        ]
        listing = client.get("/v1/jobs").json()
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["reason"] == "not_found"
    assert listing["jobs"] == []
    with gateway.client(customer) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_idempotency_key_replays_and_refuses_another_body(
    gateway: RunningGateway, customer: Customer, other_customer: Customer
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    body = {"source_url": "https://example.com/talk.mp4", "options": {"language": "en"}}
    with gateway.client(customer) as client:
        first = client.post("/v1/jobs", json=body, headers=key)
        replay = client.post("/v1/jobs", json=body, headers=key)
        other = client.post(
            "/v1/jobs", json={**body, "source_url": "https://example.com/x.mp4"}, headers=key
        )
        listed = client.get("/v1/jobs").json()["jobs"]
    with gateway.client(other_customer) as client:
        elsewhere = client.post("/v1/jobs", json=body, headers=key)
    assert first.status_code == 202
    assert replay.status_code == 202
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert other.json()["error"]["reason"] == "idempotency_key_reused"
    assert [job["job_id"] for job in listed] == [first.json()["job_id"]]
    assert elsewhere.status_code == 202  # keys are per customer
    assert elsewhere.json()["job_id"] != first.json()["job_id"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"upload_id": "upl_x", "source_url": "https://example.com/a.mp4"},
        {"source_url": "ftp://example.com/a.mp4"},
        {"source_url": "https://example.com/a.mp4", "options": {"n": 1}},
        {"source_url": "https://example.com/a.mp4", "options": {"lang": "e\u0000n"}},
        {"source_url": "https://example.com/a.mp4", "webhook_url": "http://127.0.0.1:8000/x"},
        {"source_url": "https://example.com/a.mp4", "webhook_url": "http://localhost/x"},
        {"source_url": "https://example.com/a.mp4", "webhook_url": "http://10.1.2.3/x"},
        {"source_url": "https://example.com/a.mp4", "webhook_url": "http://169.254.169.254/x"},
        {"source_url": "https://example.com/a.mp4", "webhook_url": "http://[fe80::1]/x"},
    ],
    ids=[
        "no-source",
        "two-sources",
        "not-http",
        "non-string-option",
        "nul-in-option",
        "webhook-loopback",
        "webhook-localhost",
        "webhook-private",
        "webhook-metadata",
        "webhook-link-local",
    ],
)
def test_invalid_submissions_are_422(
    gateway: RunningGateway, customer: Customer, body: dict[str, object]
) -> None:
    with gateway.client(customer) as client:
        answer = client.post("/v1/jobs", json=body)
    assert answer.status_code == 422
    expected = "source_forbidden" if "webhook_url" in body else "invalid_request"
    assert answer.json()["error"]["reason"] == expected
