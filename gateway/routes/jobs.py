"""Jobs: submit (with idempotency, quota and backpressure), list, status, cancel.

A submission is accepted once its row is committed (the jobs table is the outbox);
producing the request to Kafka is attempted at once and, failing that, left to the
relay, so a 202 always means the job will run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import AnyHttpUrl, BaseModel, Field, StringConstraints, model_validator

from gateway import metrics
from gateway.api_errors import ApiError, responses
from gateway.auth import CustomerId
from gateway.context import Context, GatewayContext
from gateway.job_access import JobId, owned_job
from gateway.job_view import JobView, job_view
from gateway.outbox import hit_after_insert_failpoint
from media.fetch import parse_networks, resolve_and_validate
from sinks.budgets import ensure_within_budget
from sinks.db import Connection, transaction
from sinks.jobs import (
    count_in_flight,
    create_job,
    list_jobs,
    set_status,
)
from sinks.stage_runs import runs_for_job, runs_for_jobs
from sinks.uploads import get_upload
from telemetry.analytics import JOB_SUBMITTED
from telemetry.logs import intake_fields
from vidinsight.errors import PermanentError, Reason

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]


# Options are short printable strings (they travel as an Avro map of strings).
OptionKey = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00]+$")]
OptionValue = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00]*$")]


class JobRequest(BaseModel):
    """What to process: an upload of this customer, or a URL the pipeline fetches."""

    upload_id: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$"
    )
    source_url: AnyHttpUrl | None = None
    webhook_url: AnyHttpUrl | None = None
    options: dict[OptionKey, OptionValue] = Field(default_factory=dict, max_length=50)

    @model_validator(mode="after")
    def _one_source(self) -> JobRequest:
        if (self.upload_id is None) == (self.source_url is None):
            raise ValueError("give exactly one of upload_id and source_url")
        return self


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued"] = "queued"


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


def request_hash(body: JobRequest) -> str:
    """A stable digest of the request, to tell a replay from a reused idempotency key."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 402, 404, 422, 429, 503),
)
def submit_job(
    body: JobRequest,
    response: Response,
    customer_id: CustomerId,
    ctx: Context,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobAccepted:
    """Accept a job; the same Idempotency-Key and body answer the same, another body 422."""
    _refuse_when_overloaded(ctx)
    if body.webhook_url is not None:
        allowed = parse_networks(ctx.settings.fetch_allowed_networks)
        resolve_and_validate(str(body.webhook_url), allowed)  # 422 for inward addresses
    job, created = _insert(ctx, customer_id, body, idempotency_key)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
        return JobAccepted(job_id=job["job_id"])
    hit_after_insert_failpoint(ctx.settings)
    ctx.publisher.publish_later(job)
    metrics.JOBS_SUBMITTED.inc()
    ctx.analytics.capture(
        JOB_SUBMITTED,
        customer_id,
        {
            "job_id": job["job_id"],
            "source": "upload" if body.upload_id else "url",
            "has_webhook": body.webhook_url is not None,
            "option_count": len(body.options),
        },
    )
    log.info("job accepted", extra=intake_fields(job["job_id"], customer_id))
    return JobAccepted(job_id=job["job_id"])


def _refuse_when_overloaded(ctx: GatewayContext) -> None:
    """503 with Retry-After when the first stage lags beyond the bound."""
    lag = ctx.lag.lag()
    if lag is not None and lag > ctx.settings.gateway_max_ingest_lag_messages:
        metrics.SHED.labels("backpressure").inc()
        raise ApiError(
            Reason.OVERLOADED,
            "the pipeline is behind; retry later",
            headers={"Retry-After": str(ctx.settings.gateway_backpressure_retry_after_seconds)},
        )


def _insert(
    ctx: GatewayContext, customer_id: str, body: JobRequest, idempotency_key: str | None
) -> tuple[dict[str, Any], bool]:
    """Commit the job row (or find the one this idempotency key made)."""
    with transaction(ctx.pool) as conn:
        in_flight = count_in_flight(conn, customer_id)
        try:
            job, created = create_job(
                conn,
                job_id=f"job_{uuid.uuid4().hex}",
                customer_id=customer_id,
                source_uri=_source_uri(conn, customer_id, body),
                webhook_url=str(body.webhook_url) if body.webhook_url else None,
                options=body.options,
                idempotency_key=idempotency_key,
                request_hash=request_hash(body),
            )
        except PermanentError as exc:
            if exc.reason is Reason.CONFLICT:
                raise ApiError(Reason.IDEMPOTENCY_KEY_REUSED, exc.message) from exc
            raise
        if created:
            ensure_within_budget(conn, customer_id, datetime.now(UTC))  # 402 when spent
        limit = ctx.settings.gateway_max_jobs_in_flight
        if created and in_flight >= limit:
            metrics.SHED.labels("quota").inc()
            raise ApiError(
                Reason.QUOTA_EXCEEDED,
                f"{in_flight} jobs in flight; the limit is {limit}",
                headers={"Retry-After": str(ctx.settings.gateway_quota_retry_after_seconds)},
            )
    return job, created


def _source_uri(conn: Connection, customer_id: str, body: JobRequest) -> str:
    """The blob URI of the caller's upload, or the URL to fetch."""
    if body.upload_id is None:
        return str(body.source_url)
    upload = get_upload(conn, body.upload_id, customer_id)
    if upload is None:
        raise ApiError(Reason.NOT_FOUND, f"no upload {body.upload_id}")
    return str(upload["blob_uri"])


@router.get("", response_model=JobPage, responses=responses(401, 422, 503))
def list_my_jobs(
    customer_id: CustomerId,
    ctx: Context,
    status: Annotated[JobStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    """The caller's jobs, newest first; pass ``next_cursor`` back as ``cursor`` for more."""
    with transaction(ctx.pool) as conn:
        jobs, next_cursor = list_jobs(conn, customer_id, status=status, cursor=cursor, limit=limit)
        runs = runs_for_jobs(conn, [job["job_id"] for job in jobs])
        views = [job_view(job, runs.get(job["job_id"], [])) for job in jobs]
    return JobPage(jobs=views, next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobView, responses=responses(401, 404, 503))
def get_my_job(
    job_id: JobId,
    customer_id: CustomerId,
    ctx: Context,
) -> JobView:
    """The job's status, per-stage progress and error; another customer's job is 404."""
    with transaction(ctx.pool) as conn:
        job = owned_job(conn, job_id, customer_id)
        return job_view(job, runs_for_job(conn, job_id))


@router.delete("/{job_id}", response_model=JobView, responses=responses(401, 404, 409, 503))
def cancel_job(
    job_id: JobId,
    customer_id: CustomerId,
    ctx: Context,
) -> JobView:
    """Cancel a queued or running job (stages stop at their next step); 409 once finished."""
    with transaction(ctx.pool) as conn:
        job = owned_job(conn, job_id, customer_id)
        if not set_status(conn, job_id, "cancelled"):
            raise ApiError(Reason.CONFLICT, f"job {job_id} already {job['status']}")
        job = owned_job(conn, job_id, customer_id)
        return job_view(job, runs_for_job(conn, job_id))
