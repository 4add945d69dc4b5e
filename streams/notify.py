"""Notify: tells the customer (webhook) and product analytics how each job ended.

Reads every JobCompleted: completed jobs from synthesise, failed ones announced by the
runtime when a message is dead-lettered. Webhooks are at least once: a worker that
dies after sending but before its run is recorded sends again on redelivery, with the
same ``webhook-id`` (a function of the job and its end state) for the receiver to
deduplicate. Each is signed with the job's customer's own secrets, never another's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sinks.customers import webhook_signing_secrets
from sinks.jobs import get_job
from sinks.webhooks import WebhookPolicy, deliver, job_event
from streams.runtime import metrics
from streams.runtime.context import HandlerContext, ProcessResource
from streams.runtime.stage import Inbound, Stage, StageResult, on_topics
from telemetry.analytics import JOB_COMPLETED, JOB_FAILED, Analytics

# The process's analytics client (it batches events in a thread of its own).
ANALYTICS: ProcessResource[Analytics] = ProcessResource(Analytics)


def announcement_key(value: Mapping[str, Any]) -> str:
    """One notification per job and end state: a replayed job that later completes is told again."""
    return f"{value['job_id']}:{value['status']}"


def notify(inbound: Inbound, ctx: HandlerContext) -> StageResult:
    """Send the job's webhook (if it asked for one) and its analytics event."""
    ended = inbound.value
    with ctx.transaction() as conn:
        # Scoped to the announcing customer: a request that reused another customer's job
        # id announces its own failure, and that other customer hears nothing of it.
        job = get_job(conn, ended["job_id"], ended["customer_id"])
        url = job.get("webhook_url") if job is not None else None
        # This customer's secrets only: no other receiver can verify (or forge) its events.
        key = ctx.settings.webhook_secrets_key.get_secret_value()
        signing = webhook_signing_secrets(conn, ended["customer_id"], key) if url else []
    if job is not None and url:
        event = job_event({**job, "status": ended["status"]})
        deliver(
            ctx.pool,
            job["job_id"],
            url,
            event,
            WebhookPolicy.from_settings(ctx.settings),
            signing,
            deadline=ctx.deadline,
        )
    metrics.count_job_end(ended["status"], job)
    ANALYTICS.get(ctx.settings).capture(
        JOB_COMPLETED if ended["status"] == "completed" else JOB_FAILED,
        ended["customer_id"],
        {"job_id": ended["job_id"], "status": ended["status"], "reason": ended.get("reason")},
    )
    return StageResult()


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The notify stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "notify",
        topics,
        group_id,
        lambda _: notify,
        failure_topic=None,  # it reads that topic itself
        run_key=announcement_key,
        honours_cancel=False,  # it tells the customer how the job ended, cancelled included
    )


STAGE = build()
