"""The "is this customer over budget?" check other code calls (``sinks.budgets``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sinks.budgets import budget_status, ensure_within_budget, is_over_budget, record_new_crossings
from sinks.customers import create_customer, set_budget
from sinks.db import Connection
from tests.fixtures.costs import spend
from vidinsight.errors import PermanentError, Reason

NOW = datetime(2026, 5, 20, 12, tzinfo=UTC)


def test_no_budget_means_never_over(db: Connection) -> None:
    customer, _ = create_customer(db, "unlimited")
    spend(db, customer, 10**12, NOW)
    assert not is_over_budget(db, customer, NOW)
    assert record_new_crossings(db, budget_status(db, customer, NOW), NOW) == []


def test_thresholds_are_exact_and_recorded_once(db: Connection) -> None:
    customer, _ = create_customer(db, "capped", monthly_budget_usd_micros=1_000_001)
    spend(db, customer, 800_000, NOW)  # 79.99992%: below the warning
    assert record_new_crossings(db, budget_status(db, customer, NOW), NOW) == []
    spend(db, customer, 1, NOW)  # 80.00002%
    assert record_new_crossings(db, budget_status(db, customer, NOW), NOW) == ["80pct"]
    assert record_new_crossings(db, budget_status(db, customer, NOW), NOW) == []
    spend(db, customer, 200_000, NOW)  # 1_000_001: exactly the budget
    assert is_over_budget(db, customer, NOW)
    assert record_new_crossings(db, budget_status(db, customer, NOW), NOW) == ["100pct"]


def test_last_months_spend_does_not_count_and_raising_the_budget_lifts_the_stop(
    db: Connection,
) -> None:
    customer, _ = create_customer(db, "monthly", monthly_budget_usd_micros=500)
    spend(db, customer, 10_000, datetime(2026, 4, 30, 23, 59, tzinfo=UTC))
    assert not is_over_budget(db, customer, NOW)
    ensure_within_budget(db, customer, NOW)
    spend(db, customer, 500, NOW)
    assert is_over_budget(db, customer, NOW)
    with pytest.raises(PermanentError) as refused:
        ensure_within_budget(db, customer, NOW)
    assert refused.value.reason is Reason.BUDGET_EXCEEDED
    set_budget(db, customer, 501)
    assert not is_over_budget(db, customer, NOW)
