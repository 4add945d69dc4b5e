"""Monthly budgets: where a customer stands, and which thresholds its spend has crossed.

The read side lives here, in ``sinks``, so the gateway and the inference layer can ask
"is this customer over budget?" without importing ``streams``. The answer comes from
the spend tables the cost aggregator keeps, which are PostgreSQL's record, so every
process sees the same figure the moment the aggregator's transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sinks.db import Connection
from sinks.ledger import customer_month_spend_usd_micros, record_budget_event
from vidinsight.errors import PermanentError, Reason

# A crossing is recorded under the label the budget_events table holds.
WARN = "80pct"
EXCEEDED = "100pct"
WARN_PERCENT = 80


@dataclass(frozen=True)
class BudgetStatus:
    """A customer's month so far against its monthly budget (None: no budget, no limit)."""

    customer_id: str
    spend_usd_micros: int
    budget_usd_micros: int | None

    @property
    def over_budget(self) -> bool:
        """True once the month's spend has reached the budget: new work must be refused."""
        return self.budget_usd_micros is not None and self.spend_usd_micros >= (
            self.budget_usd_micros
        )

    def thresholds_reached(self) -> list[str]:
        """The thresholds the spend has reached, lowest first (integer arithmetic only)."""
        if self.budget_usd_micros is None:
            return []
        reached = []
        if self.spend_usd_micros * 100 >= self.budget_usd_micros * WARN_PERCENT:
            reached.append(WARN)
        if self.over_budget:
            reached.append(EXCEEDED)
        return reached


def budget_status(conn: Connection, customer_id: str, now: datetime) -> BudgetStatus:
    """The customer's spend in the UTC month containing ``now`` and its monthly budget."""
    row = conn.execute(
        "SELECT monthly_budget_usd_micros FROM customers WHERE customer_id = %s",
        (customer_id,),
    ).fetchone()
    budget = None if row is None else row["monthly_budget_usd_micros"]
    spend = customer_month_spend_usd_micros(conn, customer_id, now)
    return BudgetStatus(customer_id, spend, None if budget is None else int(budget))


def is_over_budget(conn: Connection, customer_id: str, now: datetime) -> bool:
    """Whether new work for this customer must be refused with ``budget_exceeded``."""
    return budget_status(conn, customer_id, now).over_budget


def ensure_within_budget(conn: Connection, customer_id: str, now: datetime) -> None:
    """Raise PermanentError(budget_exceeded) if new work for this customer must be refused.

    The gateway answers it with 402; a stage dead-letters the job with the reason.
    """
    status = budget_status(conn, customer_id, now)
    if status.over_budget:
        raise PermanentError(
            Reason.BUDGET_EXCEEDED,
            f"customer {customer_id} spent {status.spend_usd_micros} of a monthly budget of"
            f" {status.budget_usd_micros} micro-dollars",
        )


def record_new_crossings(conn: Connection, status: BudgetStatus, now: datetime) -> list[str]:
    """Record each threshold reached this month; return only those recorded for the first time.

    The budget_events primary key makes this once per customer, month and threshold,
    however many batches (or aggregator restarts) see the spend above it.
    """
    return [
        threshold
        for threshold in status.thresholds_reached()
        if record_budget_event(conn, status.customer_id, now, threshold)
    ]
