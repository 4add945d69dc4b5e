"""The cost ledger and the spend tables derived from it.

A cost event is recorded once, whatever the number of deliveries: the ledger's key is
the event's deterministic ``event_id`` and the insert skips ids already present. The
spend tables are incremented only by the rows that insert actually added, in the same
statement and so the same transaction, which is what keeps every spend table summing
exactly to the ledger (invariant I5). Money is integer micro-dollars, never a float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sinks.db import Connection
from vidinsight.errors import PermanentError, Reason


@dataclass(frozen=True)
class CostEvent:
    """One billable use of a provider, attributed to customer, job, stage, provider and model."""

    event_id: str
    customer_id: str
    job_id: str
    stage: str
    provider: str
    model: str
    unit: str
    quantity: float
    amount_usd_micros: int
    occurred_at: datetime
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def __post_init__(self) -> None:
        """Refuse float or bool money and naive timestamps before they reach the ledger."""
        amount = self.amount_usd_micros
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise PermanentError(
                Reason.INVALID_REQUEST,
                f"cost event {self.event_id}: amount_usd_micros must be an integer",
            )
        if self.occurred_at.tzinfo is None:
            raise PermanentError(
                Reason.INVALID_REQUEST, f"cost event {self.event_id}: occurred_at has no timezone"
            )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CostEvent:
        """Build from a decoded ``CostEvent`` Avro record (``occurred_at_ms`` is epoch ms UTC)."""
        names = {f.name for f in fields(cls)} - {"occurred_at"}
        values = {name: record[name] for name in names if name in record}
        if "occurred_at" in record:
            values["occurred_at"] = record["occurred_at"]
        else:
            millis = int(record["occurred_at_ms"])
            values["occurred_at"] = datetime.fromtimestamp(millis // 1000, tz=UTC) + timedelta(
                milliseconds=millis % 1000
            )
        return cls(**values)


# One statement: insert the new events, then add exactly those rows to each spend table.
# Inputs arrive as parallel arrays; ORDER BY keeps lock order stable across concurrent batches.
_RECORD_SQL = """
WITH incoming AS (
  SELECT * FROM unnest(
    %(event_id)s::text[], %(customer_id)s::text[], %(job_id)s::text[], %(stage)s::text[],
    %(provider)s::text[], %(model)s::text[], %(unit)s::text[], %(quantity)s::float8[],
    %(input_tokens)s::int8[], %(cached_tokens)s::int8[], %(output_tokens)s::int8[],
    %(amount_usd_micros)s::int8[], %(occurred_at)s::timestamptz[]
  ) AS t(event_id, customer_id, job_id, stage, provider, model, unit, quantity,
         input_tokens, cached_tokens, output_tokens, amount_usd_micros, occurred_at)
),
inserted AS (
  INSERT INTO cost_ledger (event_id, customer_id, job_id, stage, provider, model, unit,
    quantity, input_tokens, cached_tokens, output_tokens, amount_usd_micros, occurred_at)
  SELECT * FROM incoming ORDER BY event_id
  ON CONFLICT (event_id) DO NOTHING
  RETURNING *
),
by_hour AS (
  INSERT INTO spend_customer_hour AS s (customer_id, hour, amount_usd_micros, event_count)
  SELECT customer_id, date_trunc('hour', occurred_at, 'UTC'), sum(amount_usd_micros), count(*)
  FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (customer_id, hour) DO UPDATE SET
    amount_usd_micros = s.amount_usd_micros + EXCLUDED.amount_usd_micros,
    event_count = s.event_count + EXCLUDED.event_count
),
by_day AS (
  INSERT INTO spend_customer_day AS s (customer_id, day, amount_usd_micros, event_count)
  SELECT customer_id, (occurred_at AT TIME ZONE 'UTC')::date, sum(amount_usd_micros), count(*)
  FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (customer_id, day) DO UPDATE SET
    amount_usd_micros = s.amount_usd_micros + EXCLUDED.amount_usd_micros,
    event_count = s.event_count + EXCLUDED.event_count
),
by_stage AS (
  INSERT INTO spend_customer_stage AS s (customer_id, stage, amount_usd_micros, event_count)
  SELECT customer_id, stage, sum(amount_usd_micros), count(*)
  FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (customer_id, stage) DO UPDATE SET
    amount_usd_micros = s.amount_usd_micros + EXCLUDED.amount_usd_micros,
    event_count = s.event_count + EXCLUDED.event_count
),
by_job AS (
  INSERT INTO spend_job AS s (job_id, customer_id, stage, amount_usd_micros, event_count)
  SELECT job_id, customer_id, stage, sum(amount_usd_micros), count(*)
  FROM inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
  ON CONFLICT (job_id, customer_id, stage) DO UPDATE SET
    amount_usd_micros = s.amount_usd_micros + EXCLUDED.amount_usd_micros,
    event_count = s.event_count + EXCLUDED.event_count
),
by_model AS (
  INSERT INTO spend_model AS s (customer_id, provider, model, amount_usd_micros, event_count,
    input_tokens, cached_tokens, output_tokens)
  SELECT customer_id, provider, model, sum(amount_usd_micros), count(*),
    sum(coalesce(input_tokens, 0)), sum(coalesce(cached_tokens, 0)),
    sum(coalesce(output_tokens, 0))
  FROM inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
  ON CONFLICT (customer_id, provider, model) DO UPDATE SET
    amount_usd_micros = s.amount_usd_micros + EXCLUDED.amount_usd_micros,
    event_count = s.event_count + EXCLUDED.event_count,
    input_tokens = s.input_tokens + EXCLUDED.input_tokens,
    cached_tokens = s.cached_tokens + EXCLUDED.cached_tokens,
    output_tokens = s.output_tokens + EXCLUDED.output_tokens
)
SELECT event_id FROM inserted
"""


def record_cost_events(conn: Connection, events: Iterable[CostEvent]) -> list[CostEvent]:
    """Record a batch; return only the events that were new (the ones now counted)."""
    unique = _first_of_each_id(events)
    if not unique:
        return []
    columns = {f.name: [getattr(e, f.name) for e in unique] for f in fields(CostEvent)}
    new_ids = {row["event_id"] for row in conn.execute(_RECORD_SQL, columns).fetchall()}
    return [e for e in unique if e.event_id in new_ids]


def _first_of_each_id(events: Iterable[CostEvent]) -> list[CostEvent]:
    """Drop repeats of an event_id inside one batch (a producer retry can duplicate one)."""
    seen: dict[str, CostEvent] = {}
    for event in events:
        seen.setdefault(event.event_id, event)
    return list(seen.values())


def customer_spend_usd_micros(
    conn: Connection,
    customer_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """A customer's spend in [since, until), from the hourly table (hour-aligned bounds)."""
    row = conn.execute(
        "SELECT coalesce(sum(amount_usd_micros), 0)::bigint AS total FROM spend_customer_hour"
        " WHERE customer_id = %s AND (%s::timestamptz IS NULL OR hour >= %s)"
        " AND (%s::timestamptz IS NULL OR hour < %s)",
        (customer_id, since, since, until, until),
    ).fetchone()
    return int(row["total"]) if row else 0


def customer_month_spend_usd_micros(conn: Connection, customer_id: str, month: datetime) -> int:
    """A customer's spend in the UTC calendar month containing ``month`` (budget checks)."""
    row = conn.execute(
        "SELECT coalesce(sum(amount_usd_micros), 0)::bigint AS total FROM spend_customer_day"
        " WHERE customer_id = %s"
        " AND day >= date_trunc('month', %s::timestamptz, 'UTC')::date"
        " AND day < (date_trunc('month', %s::timestamptz, 'UTC') + interval '1 month')::date",
        (customer_id, month, month),
    ).fetchone()
    return int(row["total"]) if row else 0


def customer_spend_by_stage(conn: Connection, customer_id: str) -> dict[str, int]:
    """A customer's all-time spend per pipeline stage."""
    rows = conn.execute(
        "SELECT stage, amount_usd_micros FROM spend_customer_stage WHERE customer_id = %s"
        " ORDER BY stage",
        (customer_id,),
    ).fetchall()
    return {r["stage"]: int(r["amount_usd_micros"]) for r in rows}


def customer_spend_by_model(conn: Connection, customer_id: str) -> list[dict[str, Any]]:
    """A customer's all-time spend and tokens per provider and model."""
    return conn.execute(
        "SELECT provider, model, amount_usd_micros, event_count, input_tokens, cached_tokens,"
        " output_tokens FROM spend_model WHERE customer_id = %s ORDER BY provider, model",
        (customer_id,),
    ).fetchall()


def job_spend_by_stage(
    conn: Connection, job_id: str, customer_id: str | None = None
) -> dict[str, int]:
    """A job's spend per stage; with ``customer_id``, only if that customer owns it (I6)."""
    rows = conn.execute(
        "SELECT stage, sum(amount_usd_micros)::bigint AS amount FROM spend_job"
        " WHERE job_id = %s AND (%s::text IS NULL OR customer_id = %s)"
        " GROUP BY stage ORDER BY stage",
        (job_id, customer_id, customer_id),
    ).fetchall()
    return {r["stage"]: int(r["amount"]) for r in rows}


def job_spend_usd_micros(conn: Connection, job_id: str, customer_id: str | None = None) -> int:
    """A job's total spend."""
    return sum(job_spend_by_stage(conn, job_id, customer_id).values())


def record_budget_event(
    conn: Connection, customer_id: str, month: datetime, threshold: str
) -> bool:
    """Note that a budget threshold ('80pct', '100pct') was crossed this UTC month.

    True only the first time, so the caller alerts once per customer, month and threshold.
    """
    row = conn.execute(
        "INSERT INTO budget_events (customer_id, month, threshold)"
        " VALUES (%s, date_trunc('month', %s::timestamptz, 'UTC')::date, %s)"
        " ON CONFLICT DO NOTHING RETURNING customer_id",
        (customer_id, month, threshold),
    ).fetchone()
    return row is not None


def job_cost_events(conn: Connection, job_id: str, customer_id: str) -> list[dict[str, Any]]:
    """A job's ledger entries, oldest first, only if ``customer_id`` owns them (I6)."""
    return conn.execute(
        "SELECT event_id, stage, provider, model, unit, quantity, input_tokens, cached_tokens,"
        " output_tokens, amount_usd_micros, occurred_at FROM cost_ledger"
        " WHERE job_id = %s AND customer_id = %s ORDER BY occurred_at, event_id",
        (job_id, customer_id),
    ).fetchall()


def customer_spend_by_day_and_stage(
    conn: Connection, customer_id: str, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """A customer's spend per UTC day and stage in [since, until), from the ledger."""
    return conn.execute(
        "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, stage,"
        " sum(amount_usd_micros)::bigint AS amount_usd_micros, count(*) AS event_count"
        " FROM cost_ledger WHERE customer_id = %s"
        " AND (%s::timestamptz IS NULL OR occurred_at >= %s)"
        " AND (%s::timestamptz IS NULL OR occurred_at < %s)"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (customer_id, since, since, until, until),
    ).fetchall()
