"""Jobs: created once, moved only forward, listed per tenant, published through the outbox."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from sinks import jobs
from sinks.db import Connection, Pool, transaction
from vidinsight.errors import PermanentError, Reason


def _new_job(conn: Connection, customer_id: str, **extra: Any) -> str:
    job_id = f"job_{uuid.uuid4().hex}"
    jobs.create_job(
        conn, job_id=job_id, customer_id=customer_id, source_uri="blob://in.mp4", **extra
    )
    return job_id


def _customer() -> str:
    return f"cus_{uuid.uuid4().hex}"


def test_creating_the_same_job_twice_keeps_one_row(db: Connection) -> None:
    customer, job_id = _customer(), f"job_{uuid.uuid4().hex}"
    first, created_first = jobs.create_job(
        db, job_id=job_id, customer_id=customer, source_uri="blob://a.mp4", options={"lang": "en"}
    )
    again, created_again = jobs.create_job(
        db, job_id=job_id, customer_id=customer, source_uri="blob://a.mp4", options={"lang": "en"}
    )
    count = db.execute("SELECT count(*) AS n FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
    assert (created_first, created_again) == (True, False)
    assert again == first
    assert first["status"] == "queued" and first["options"] == {"lang": "en"}
    assert count == {"n": 1}


def test_an_idempotency_key_returns_the_first_job_and_refuses_a_different_request(
    db: Connection,
) -> None:
    customer = _customer()
    first_id = _new_job(db, customer, idempotency_key="k1", request_hash="h1")
    replay, created = jobs.create_job(
        db,
        job_id=f"job_{uuid.uuid4().hex}",
        customer_id=customer,
        source_uri="blob://in.mp4",
        idempotency_key="k1",
        request_hash="h1",
    )
    assert (replay["job_id"], created) == (first_id, False)
    with pytest.raises(PermanentError) as caught:
        jobs.create_job(
            db,
            job_id=f"job_{uuid.uuid4().hex}",
            customer_id=customer,
            source_uri="blob://other.mp4",
            idempotency_key="k1",
            request_hash="h2",
        )
    assert caught.value.reason is Reason.CONFLICT
    # The same key is free for another customer.
    _new_job(db, _customer(), idempotency_key="k1", request_hash="h2")


def test_a_job_id_of_another_customer_is_a_conflict(db: Connection) -> None:
    job_id = _new_job(db, _customer())
    with pytest.raises(PermanentError) as caught:
        jobs.create_job(db, job_id=job_id, customer_id=_customer(), source_uri="blob://x.mp4")
    assert caught.value.reason is Reason.CONFLICT


def test_a_completed_job_never_goes_back_to_running(db: Connection) -> None:
    job_id = _new_job(db, _customer())
    assert jobs.set_status(db, job_id, "running")
    assert jobs.set_status(db, job_id, "running")  # a redelivered start is harmless
    assert jobs.set_status(db, job_id, "completed")
    assert not jobs.set_status(db, job_id, "running")
    assert not jobs.set_status(db, job_id, "cancelled")
    assert not jobs.fail_job(db, job_id, "notify", Reason.UNEXPECTED_ERROR, "late failure")
    job = jobs.get_job(db, job_id)
    assert job is not None
    assert job["status"] == "completed" and job["completed_at"] is not None
    assert job["error_reason"] is None


def test_a_failed_job_carries_stage_and_reason(db: Connection) -> None:
    job_id = _new_job(db, _customer())
    assert jobs.fail_job(db, job_id, "preprocess", Reason.CORRUPT_MEDIA, "moov atom not found")
    job = jobs.get_job(db, job_id)
    assert job is not None
    assert (job["status"], job["error_stage"], job["error_reason"]) == (
        "failed",
        "preprocess",
        "corrupt_media",
    )


def test_a_failure_under_another_customers_name_leaves_the_job_alone(db: Connection) -> None:
    owner, intruder = _customer(), _customer()
    job_id = _new_job(db, owner)
    assert not jobs.fail_job(db, job_id, "ingest", Reason.CONFLICT, "job id reused", intruder)
    job = jobs.get_job(db, job_id)
    assert job is not None and job["status"] == "queued" and job["error_reason"] is None
    assert jobs.fail_job(db, job_id, "ingest", Reason.CORRUPT_MEDIA, "bad", owner)


def test_status_of_an_unknown_job_is_not_found(db: Connection) -> None:
    with pytest.raises(PermanentError) as caught:
        jobs.set_status(db, f"job_{uuid.uuid4().hex}", "running")
    assert caught.value.reason is Reason.NOT_FOUND


def test_customers_see_only_their_own_jobs_page_by_page(db: Connection) -> None:
    mine, theirs = _customer(), _customer()
    my_jobs = {_new_job(db, mine) for _ in range(5)}
    their_job = _new_job(db, theirs)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = jobs.list_jobs(db, mine, cursor=cursor, limit=2)
        seen += [job["job_id"] for job in page]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == my_jobs
    assert jobs.get_job(db, their_job, customer_id=mine) is None
    assert jobs.get_job(db, their_job, customer_id=theirs) is not None
    jobs.set_status(db, seen[0], "running")
    running, _ = jobs.list_jobs(db, mine, status="running")
    assert [job["job_id"] for job in running] == [seen[0]]


def test_a_mangled_cursor_is_an_invalid_request(db: Connection) -> None:
    with pytest.raises(PermanentError) as caught:
        jobs.list_jobs(db, _customer(), cursor="not-a-cursor")
    assert caught.value.reason is Reason.INVALID_REQUEST


def test_the_outbox_holds_a_job_until_it_is_marked_published(db_pool: Pool) -> None:
    with transaction(db_pool) as conn:
        job_id = _new_job(conn, _customer())
    with transaction(db_pool) as conn:
        pending = {job["job_id"] for job in jobs.unpublished(conn, limit=100_000)}
        assert job_id in pending
        assert jobs.mark_published(conn, job_id)
        assert not jobs.mark_published(conn, job_id)
    with transaction(db_pool) as conn:
        pending = {job["job_id"] for job in jobs.unpublished(conn, limit=100_000)}
        recent = {j["job_id"] for j in jobs.unpublished(conn, older_than=timedelta(hours=1))}
    assert job_id not in pending and job_id not in recent


def test_a_failing_transaction_leaves_no_job(db_pool: Pool) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError), transaction(db_pool) as conn:
        jobs.create_job(conn, job_id=job_id, customer_id=_customer(), source_uri="blob://x")
        raise RuntimeError("handler failed after the upsert")
    with transaction(db_pool) as conn:
        assert jobs.get_job(conn, job_id) is None
