"""The spend report behind ``vidinsight costs report``: spend grouped by one dimension.

Without a date range or a job each dimension is read from its spend table, the aggregate
that the gateway and dashboards read too; a range needs per-event times and a job filter
per-event jobs, so then the ledger itself is grouped (the spend tables for stage, job and
model keep no time, and only ``spend_job`` keeps the job). Both are written in one
transaction and sum to each other (invariant I5).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sinks.db import Connection

DIMENSIONS = ("stage", "job", "day", "model")

# For each dimension: (spend table query, ledger query); both yield the same columns.
_SPEND_TABLE_SQL = {
    "stage": "SELECT customer_id, stage AS key, amount_usd_micros, event_count"
    " FROM spend_customer_stage WHERE {where}",
    "job": "SELECT customer_id, job_id AS key, sum(amount_usd_micros)::bigint AS amount_usd_micros,"
    " sum(event_count)::bigint AS event_count FROM spend_job WHERE {where} GROUP BY 1, 2",
    "day": "SELECT customer_id, day::text AS key, amount_usd_micros, event_count"
    " FROM spend_customer_day WHERE {where} AND (%(from)s::date IS NULL OR day >= %(from)s)"
    " AND (%(to)s::date IS NULL OR day <= %(to)s)",
    "model": "SELECT customer_id, provider || '/' || model AS key, amount_usd_micros, event_count"
    " FROM spend_model WHERE {where}",
}
_LEDGER_KEY = {
    "stage": "stage",
    "job": "job_id",
    "day": "(occurred_at AT TIME ZONE 'UTC')::date::text",
    "model": "provider || '/' || model",
}
_LEDGER_SQL = (
    "SELECT customer_id, {key} AS key, sum(amount_usd_micros)::bigint AS amount_usd_micros,"
    " count(*)::bigint AS event_count FROM cost_ledger WHERE {where}"
    " AND (%(from)s::date IS NULL OR occurred_at >= (%(from)s::date AT TIME ZONE 'UTC'))"
    " AND (%(to)s::date IS NULL OR occurred_at < ((%(to)s::date + 1) AT TIME ZONE 'UTC'))"
    " GROUP BY 1, 2"
)
_CUSTOMER = "(%(customer)s::text IS NULL OR customer_id = %(customer)s)"
_JOB = "(%(job)s::text IS NULL OR job_id = %(job)s)"


def spend_report(
    conn: Connection,
    by: str,
    customer_id: str | None = None,
    from_day: date | None = None,
    to_day: date | None = None,
    job_id: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of (customer_id, key, amount_usd_micros, event_count), ordered; days inclusive."""
    if by not in DIMENSIONS:
        raise ValueError(f"unknown dimension {by!r}; known: {', '.join(DIMENSIONS)}")
    ranged = from_day is not None or to_day is not None
    if job_id is None and (by == "day" or not ranged):
        sql = _SPEND_TABLE_SQL[by].format(where=_CUSTOMER)
    else:
        sql = _LEDGER_SQL.format(key=_LEDGER_KEY[by], where=f"{_CUSTOMER} AND {_JOB}")
    params = {"customer": customer_id, "from": from_day, "to": to_day, "job": job_id}
    return conn.execute(f"{sql} ORDER BY 1, 2", params).fetchall()
