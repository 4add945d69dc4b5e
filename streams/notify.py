"""Notify: tells the customer (webhook) and product analytics how each job ended.

Reads every JobCompleted: completed jobs from synthesise, failed ones announced by the
runtime when a message is dead-lettered. Webhooks are at least once: a worker that
dies after sending but before its run is recorded sends again on redelivery, so the
body carries the job id and status for the receiver to deduplicate (as Stripe's do).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sinks.db import Pool, create_pool, transaction
from sinks.jobs import get_job
from sinks.webhooks import WebhookPolicy, deliver, job_event
from streams.runtime import metrics
from streams.runtime.stage import Inbound, Stage, StageResult, on_topics
from telemetry.analytics import JOB_COMPLETED, JOB_FAILED, Analytics
from vidinsight.settings import get_settings


@lru_cache(maxsize=1)
def _pool() -> Pool:
    return create_pool(get_settings(), name="notify")


@lru_cache(maxsize=1)
def _analytics() -> Analytics:
    return Analytics(get_settings())


def announcement_key(value: Mapping[str, Any]) -> str:
    """One notification per job and end state: a replayed job that later completes is told again."""
    return f"{value['job_id']}:{value['status']}"


def notify(inbound: Inbound) -> StageResult:
    """Send the job's webhook (if it asked for one) and its analytics event."""
    ended = inbound.value
    with transaction(_pool()) as conn:
        # Scoped to the announcing customer: a request that reused another customer's job
        # id announces its own failure, and that other customer hears nothing of it.
        job = get_job(conn, ended["job_id"], ended["customer_id"])
    if job is not None and job.get("webhook_url"):
        event = job_event({**job, "status": ended["status"]})
        deliver(
            _pool(),
            job["job_id"],
            job["webhook_url"],
            event,
            WebhookPolicy.from_settings(get_settings()),
        )
    _count_end(ended["status"], job)
    _analytics().capture(
        JOB_COMPLETED if ended["status"] == "completed" else JOB_FAILED,
        ended["customer_id"],
        {"job_id": ended["job_id"], "status": ended["status"], "reason": ended.get("reason")},
    )
    return StageResult()


# Jobs out start at zero, so the first end of each kind shows in rate() (metrics.initialise).
for _status in ("completed", "failed"):
    metrics.JOBS_ENDED.labels(_status)
    metrics.JOB_SECONDS.labels(_status)


def _count_end(status: str, job: Mapping[str, Any] | None) -> None:
    """Jobs out, and how long each took from acceptance to its end (the pipeline's latency)."""
    metrics.JOBS_ENDED.labels(status).inc()
    if job is not None and job.get("completed_at") and job.get("created_at"):
        elapsed = job["completed_at"] - job["created_at"]
        metrics.JOB_SECONDS.labels(status).observe(elapsed.total_seconds())


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The notify stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "notify",
        topics,
        group_id,
        lambda _: notify,
        failure_topic=None,  # it reads that topic itself
        run_key=announcement_key,
    )


STAGE = build()
