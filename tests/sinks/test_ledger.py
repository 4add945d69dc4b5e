"""The cost ledger counts each event once, and the spend tables always sum to it (I2, I5)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from sinks import ledger
from sinks.db import Connection, Pool, transaction
from sinks.ledger import CostEvent
from vidinsight.errors import PermanentError

SPEND_TABLES = (
    "spend_customer_hour",
    "spend_customer_day",
    "spend_customer_stage",
    "spend_job",
    "spend_model",
)


def _events(customer_id: str, job_ids: list[str]) -> list[CostEvent]:
    """A batch across two jobs, stages, models, hours and a UTC day boundary."""
    start = datetime(2031, 3, 31, 22, 30, tzinfo=UTC)
    events = []
    for n in range(12):
        events.append(
            CostEvent(
                event_id=f"evt_{uuid.uuid4().hex}",
                customer_id=customer_id,
                job_id=job_ids[n % 2],
                stage=("transcribe", "analyse", "synthesise")[n % 3],
                provider="local",
                model=("tiny.en", "extractive")[n % 2],
                unit="tokens",
                quantity=1000.0 + n,
                amount_usd_micros=1_234_567 + n * 1_001,
                occurred_at=start + timedelta(minutes=37 * n),
                input_tokens=100 * n,
                cached_tokens=n,
                output_tokens=10 * n,
            )
        )
    return events


def _ledger_total(conn: Connection, column: str, value: str) -> int:
    row = conn.execute(
        f"SELECT coalesce(sum(amount_usd_micros), 0)::bigint AS t FROM cost_ledger"
        f" WHERE {column} = %s",
        (value,),
    ).fetchone()
    return int(row["t"]) if row else 0


def _table_total(conn: Connection, table: str, column: str, value: str) -> tuple[int, int]:
    row = conn.execute(
        f"SELECT coalesce(sum(amount_usd_micros), 0)::bigint AS t,"
        f" coalesce(sum(event_count), 0)::bigint AS n FROM {table} WHERE {column} = %s",
        (value,),
    ).fetchone()
    assert row is not None
    return int(row["t"]), int(row["n"])


def test_recording_the_same_batch_twice_counts_each_event_once(db: Connection) -> None:
    customer, jobs = f"cus_{uuid.uuid4().hex}", [f"job_{uuid.uuid4().hex}" for _ in range(2)]
    batch = _events(customer, jobs)
    first = ledger.record_cost_events(db, batch)
    second = ledger.record_cost_events(db, batch)
    # A redelivered batch mixed with one new event: only the new one counts.
    extra = _events(customer, jobs)[:1]
    third = ledger.record_cost_events(db, [*batch[:3], *extra, extra[0]])
    expected = sum(e.amount_usd_micros for e in [*batch, *extra])
    assert (len(first), second, third) == (12, [], extra)
    assert ledger.customer_spend_usd_micros(db, customer) == expected
    assert _ledger_total(db, "customer_id", customer) == expected


def test_spend_tables_sum_exactly_to_the_ledger_per_customer_and_per_job(db: Connection) -> None:
    customer, jobs = f"cus_{uuid.uuid4().hex}", [f"job_{uuid.uuid4().hex}" for _ in range(2)]
    batch = _events(customer, jobs)
    ledger.record_cost_events(db, batch[:5])
    ledger.record_cost_events(db, batch)
    ledger.record_cost_events(db, batch[3:])
    total = _ledger_total(db, "customer_id", customer)
    assert total == sum(e.amount_usd_micros for e in batch)
    for table in SPEND_TABLES:
        assert _table_total(db, table, "customer_id", customer) == (total, 12), table
    for job_id in jobs:
        job_total = _ledger_total(db, "job_id", job_id)
        assert _table_total(db, "spend_job", "job_id", job_id)[0] == job_total
        assert ledger.job_spend_usd_micros(db, job_id, customer) == job_total
        assert ledger.job_spend_usd_micros(db, job_id, "cus_someone_else") == 0
    by_stage = ledger.customer_spend_by_stage(db, customer)
    assert sum(by_stage.values()) == total and set(by_stage) == {
        "transcribe",
        "analyse",
        "synthesise",
    }
    by_model = ledger.customer_spend_by_model(db, customer)
    assert sum(m["input_tokens"] for m in by_model) == sum(e.input_tokens for e in batch)


def test_spend_is_bucketed_by_utc_hour_day_and_month(db: Connection) -> None:
    customer, job = f"cus_{uuid.uuid4().hex}", f"job_{uuid.uuid4().hex}"
    batch = _events(customer, [job, job])
    ledger.record_cost_events(db, batch)
    march = [e for e in batch if e.occurred_at.month == 3]
    april = [e for e in batch if e.occurred_at.month == 4]
    assert march and april
    assert ledger.customer_month_spend_usd_micros(
        db, customer, datetime(2031, 3, 15, tzinfo=UTC)
    ) == sum(e.amount_usd_micros for e in march)
    assert ledger.customer_month_spend_usd_micros(
        db, customer, datetime(2031, 4, 1, tzinfo=UTC)
    ) == sum(e.amount_usd_micros for e in april)
    hour = datetime(2031, 3, 31, 23, tzinfo=UTC)
    in_hour = [e for e in batch if hour <= e.occurred_at < hour + timedelta(hours=1)]
    assert ledger.customer_spend_usd_micros(
        db, customer, since=hour, until=hour + timedelta(hours=1)
    ) == sum(e.amount_usd_micros for e in in_hour)


def test_concurrent_redeliveries_of_one_batch_count_it_once(db_pool: Pool) -> None:
    customer, jobs = f"cus_{uuid.uuid4().hex}", [f"job_{uuid.uuid4().hex}" for _ in range(2)]
    batch = _events(customer, jobs)
    workers = 4
    barrier = threading.Barrier(workers)
    newly: list[int] = []

    def record() -> None:
        barrier.wait()
        with transaction(db_pool) as conn:
            newly.append(len(ledger.record_cost_events(conn, batch)))

    threads = [threading.Thread(target=record) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    with transaction(db_pool) as conn:
        total = _ledger_total(conn, "customer_id", customer)
        day = _table_total(conn, "spend_customer_day", "customer_id", customer)
    assert sorted(newly) == [0, 0, 0, 12]
    assert total == sum(e.amount_usd_micros for e in batch)
    assert day == (total, 12)


def test_money_must_be_integer_micro_dollars() -> None:
    with pytest.raises(PermanentError):
        CostEvent(
            event_id="evt_float",
            customer_id="cus",
            job_id="job",
            stage="analyse",
            provider="local",
            model="m",
            unit="tokens",
            quantity=1.0,
            amount_usd_micros=0.5,  # type: ignore[arg-type]
            occurred_at=datetime.now(UTC),
        )


def test_a_decoded_avro_record_becomes_a_cost_event() -> None:
    event = CostEvent.from_record(
        {
            "event_id": "evt_1",
            "customer_id": "cus_1",
            "job_id": "job_1",
            "stage": "transcribe",
            "provider": "local",
            "model": "tiny.en",
            "unit": "audio_seconds",
            "quantity": 30.0,
            "input_tokens": 0,
            "cached_tokens": 0,
            "output_tokens": 0,
            "amount_usd_micros": 3000,
            "occurred_at_ms": 1_900_000_000_123,
        }
    )
    assert event.occurred_at == datetime(2030, 3, 17, 17, 46, 40, 123000, tzinfo=UTC)


def test_a_budget_threshold_alerts_once_per_month(db: Connection) -> None:
    customer = f"cus_{uuid.uuid4().hex}"
    march = datetime(2031, 3, 5, tzinfo=UTC)
    assert ledger.record_budget_event(db, customer, march, "80pct")
    assert not ledger.record_budget_event(db, customer, march + timedelta(days=20), "80pct")
    assert ledger.record_budget_event(db, customer, march, "100pct")
    assert ledger.record_budget_event(db, customer, march + timedelta(days=31), "80pct")
