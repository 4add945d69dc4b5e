"""One batch of cost events through one PostgreSQL transaction.

The ledger insert is the deduplication (``sinks.ledger.record_cost_events``): an event
already recorded adds nothing, so a redelivered batch, a producer retry or an aggregator
killed before its offsets were committed can never count a cost twice. Budget crossings
are recorded in the same transaction, so they are never lost nor recorded twice either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

from schemas.codec import Codec
from sinks.budgets import BudgetStatus, budget_status, record_new_crossings
from sinks.db import Connection, Pool, transaction
from sinks.ledger import CostEvent, record_cost_events
from vidinsight.errors import PermanentError, Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Crossing:
    """A budget threshold a customer's month spend crossed in this batch, for the first time."""

    threshold: str
    status: BudgetStatus


@dataclass
class BatchOutcome:
    """What a batch did: the events now counted, the repeats dropped, the crossings."""

    new: list[CostEvent] = field(default_factory=list)
    duplicates: int = 0
    undecodable: int = 0
    crossings: list[Crossing] = field(default_factory=list)
    duration_ms: float = 0.0


def decode_events(
    codec: Codec, topic: str, values: Sequence[bytes | None]
) -> tuple[list[CostEvent], int]:
    """Decode wire-format values; skip (and count) the ones that are not valid CostEvents.

    A cost event that cannot be decoded can never be counted, so holding the partition
    for it would only stop every good one behind it (invariant I3); it is logged with
    its reason instead. A registry outage raises TransientError and the batch is retried.
    """
    events: list[CostEvent] = []
    undecodable = 0
    for value in values:
        try:
            events.append(CostEvent.from_record(codec.decode(topic, value)))
        except PermanentError as exc:
            undecodable += 1
            log.error(
                "cost event skipped: %s",
                exc.message,
                extra={"reason": exc.reason, "topic": topic, "stage": "costs"},
            )
        except (KeyError, TypeError, ValueError) as exc:
            undecodable += 1
            log.error(
                "cost event skipped: %s",
                exc,
                extra={"reason": Reason.INVALID_SCHEMA, "topic": topic, "stage": "costs"},
            )
    return events, undecodable


def record_batch(pool: Pool, events: Sequence[CostEvent], now: datetime) -> BatchOutcome:
    """Record the events and any budget crossings they cause, in one transaction."""
    outcome = BatchOutcome()
    with transaction(pool) as conn:
        outcome.new = record_cost_events(conn, events)
        outcome.duplicates = len(events) - len(outcome.new)
        for customer_id in budgeted_customers(conn, {e.customer_id for e in outcome.new}):
            status = budget_status(conn, customer_id, now)
            outcome.crossings += [
                Crossing(threshold, status) for threshold in record_new_crossings(conn, status, now)
            ]
    return outcome


def budgeted_customers(conn: Connection, customer_ids: Set[str]) -> list[str]:
    """The customers among ``customer_ids`` that have a monthly budget, in order.

    Only they can cross a threshold. Asking every customer of a batch for its status
    took two round trips per customer, so a batch over a few hundred customers spent
    most of its transaction on answers that could only be "no budget".
    """
    if not customer_ids:
        return []
    rows = conn.execute(
        "SELECT customer_id FROM customers WHERE customer_id = ANY(%s)"
        " AND monthly_budget_usd_micros IS NOT NULL ORDER BY customer_id",
        (sorted(customer_ids),),
    ).fetchall()
    return [row["customer_id"] for row in rows]
