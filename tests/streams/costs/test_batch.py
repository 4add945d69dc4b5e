"""One batch through ``record_batch`` against the real PostgreSQL, without Kafka."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from sinks.budgets import BudgetStatus, budget_status
from sinks.customers import create_customer
from sinks.db import Connection, Pool
from streams.costs import batch
from streams.costs.batch import budgeted_customers, record_batch
from tests.fixtures.costs import cost_event

NOW = datetime.now(UTC)


def test_only_customers_with_a_budget_are_checked_and_their_crossings_recorded(
    db_pool: Pool, db: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    capped, _ = create_customer(db, "capped", monthly_budget_usd_micros=1_000)
    unlimited, _ = create_customer(db, "unlimited")
    db.commit()  # record_batch reads them through its own connection
    unknown = f"cus-unknown-{uuid.uuid4().hex[:8]}"  # spend may arrive before the row
    checked: list[str] = []

    def counting_status(conn: Connection, customer_id: str, now: datetime) -> BudgetStatus:
        checked.append(customer_id)
        return budget_status(conn, customer_id, now)

    monkeypatch.setattr(batch, "budget_status", counting_status)
    events = [cost_event(c, 600, NOW) for c in (unlimited, capped, unknown, capped, unlimited)]
    outcome = record_batch(db_pool, events, NOW)
    assert len(outcome.new) == len(events)
    assert checked == [capped]
    assert [(c.threshold, c.status.customer_id) for c in outcome.crossings] == [
        ("80pct", capped),
        ("100pct", capped),
    ]
    assert budgeted_customers(db, {capped, unlimited, unknown}) == [capped]
    assert budgeted_customers(db, set()) == []
