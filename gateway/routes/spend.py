"""What a customer has spent: per job (by stage, with the ledger's events) and by day.

Amounts are read from the cost ledger and the spend tables the cost aggregator keeps,
always for the calling customer only (I6). Each amount is given in USD and, exactly,
in integer micro-dollars.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from gateway.api_errors import ApiError, responses
from gateway.auth import CustomerId
from gateway.context import Context
from gateway.job_access import JobId, owned_job
from gateway.money import usd
from sinks.db import transaction
from sinks.ledger import customer_spend_by_day_and_stage, job_cost_events, job_spend_by_stage
from vidinsight.errors import Reason

router = APIRouter(tags=["spend"])
MAX_USAGE_DAYS = 366


class CostEventView(BaseModel):
    event_id: str
    stage: str
    provider: str
    model: str
    unit: str
    quantity: float
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    amount_usd: float
    amount_usd_micros: int
    occurred_at: datetime


class JobCosts(BaseModel):
    job_id: str
    total_usd: float
    total_usd_micros: int
    by_stage: dict[str, float]
    events: list[CostEventView]


class UsageDay(BaseModel):
    day: date
    total_usd: float
    total_usd_micros: int
    by_stage: dict[str, float]


class Usage(BaseModel):
    from_day: date
    to_day: date
    total_usd: float
    total_usd_micros: int
    days: list[UsageDay]


@router.get("/v1/jobs/{job_id}/costs", response_model=JobCosts, responses=responses(401, 404, 503))
def job_costs(job_id: JobId, customer_id: CustomerId, ctx: Context) -> JobCosts:
    """What a job has cost so far, by stage, with every ledger event."""
    with transaction(ctx.pool) as conn:
        owned_job(conn, job_id, customer_id)
        by_stage = job_spend_by_stage(conn, job_id, customer_id)
        events = job_cost_events(conn, job_id, customer_id)
    total = sum(by_stage.values())
    return JobCosts(
        job_id=job_id,
        total_usd=usd(total),
        total_usd_micros=total,
        by_stage={stage: usd(amount) for stage, amount in by_stage.items()},
        events=[
            CostEventView(**{**e, "amount_usd": usd(int(e["amount_usd_micros"]))}) for e in events
        ],
    )


@router.get("/v1/usage", response_model=Usage, responses=responses(401, 422, 503))
def usage(
    customer_id: CustomerId,
    ctx: Context,
    from_day: Annotated[date | None, Query(alias="from", description="first UTC day")] = None,
    to_day: Annotated[date | None, Query(alias="to", description="last UTC day, included")] = None,
) -> Usage:
    """The caller's spend by UTC day and stage, ``from`` to ``to`` inclusive (default: 30 days)."""
    last = to_day or datetime.now(UTC).date()
    first = from_day or last - timedelta(days=29)
    if first > last or (last - first).days >= MAX_USAGE_DAYS:
        raise ApiError(
            Reason.INVALID_REQUEST, f"'from' must not be after 'to', at most {MAX_USAGE_DAYS} days"
        )
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    with transaction(ctx.pool) as conn:
        rows = customer_spend_by_day_and_stage(conn, customer_id, since, until)
    days: dict[date, dict[str, int]] = {}
    for row in rows:
        days.setdefault(row["day"], {})[row["stage"]] = int(row["amount_usd_micros"])
    total = sum(sum(stages.values()) for stages in days.values())
    return Usage(
        from_day=first,
        to_day=last,
        total_usd=usd(total),
        total_usd_micros=total,
        days=[
            UsageDay(
                day=day,
                total_usd=usd(sum(stages.values())),
                total_usd_micros=sum(stages.values()),
                by_stage={stage: usd(amount) for stage, amount in stages.items()},
            )
            for day, stages in sorted(days.items())
        ],
    )
