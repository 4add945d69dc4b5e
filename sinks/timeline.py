"""Read-only queries behind the operator's ``vidinsight jobs``: a job's timeline, recent failures.

Everything an operator asks first ("where did it fail, why, what did it cost") is in
PostgreSQL already, written in the same transaction as each stage's result: the job
row (status and the failing stage, reason and message), the stage runs (attempts,
start and end, reason, exception message, the input's topic, partition and offset),
the audit trail and the cost ledger. These queries only read, across customers:
they are for operators, never for a customer-facing route.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sinks.audit import entries_for_job
from sinks.db import Connection
from sinks.jobs import get_job
from sinks.ledger import job_spend_by_stage


@dataclass(frozen=True)
class Timeline:
    """A job with every stage run, its audit trail and its cost per stage (micro-dollars)."""

    job: dict[str, Any]
    runs: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    cost_by_stage: dict[str, int]


def job_timeline(conn: Connection, job_id: str) -> Timeline | None:
    """The job's timeline, or None for a job the platform never saw."""
    job = get_job(conn, job_id)
    if job is None:
        return None
    return Timeline(
        job=job,
        runs=stage_runs_of(conn, job_id),
        audit=entries_for_job(conn, job_id),
        cost_by_stage=job_spend_by_stage(conn, job_id),
    )


def stage_runs_of(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """Every stage run of a job with where its input came from, in the order they started."""
    return conn.execute(
        "SELECT stage, run_key, status, attempts, reason, error_message, source_topic,"
        " source_partition, source_offset, started_at, finished_at, updated_at"
        " FROM stage_runs WHERE job_id = %s ORDER BY started_at NULLS LAST, run_key",
        (job_id,),
    ).fetchall()


def recent_jobs(
    conn: Connection,
    since: datetime,
    *,
    status: str | None = None,
    customer_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Jobs created since ``since``, newest first, optionally of one status and customer."""
    return conn.execute(
        "SELECT job_id, customer_id, status, error_stage, error_reason, error_message,"
        " source_uri, created_at, updated_at, completed_at FROM jobs"
        " WHERE created_at >= %s AND (%s::text IS NULL OR status = %s)"
        " AND (%s::text IS NULL OR customer_id = %s)"
        " ORDER BY created_at DESC, job_id DESC LIMIT %s",
        (since, status, status, customer_id, customer_id, limit),
    ).fetchall()


def failure_counts(
    conn: Connection,
    since: datetime,
    *,
    status: str | None = None,
    customer_id: str | None = None,
) -> list[dict[str, Any]]:
    """How many jobs since ``since`` ended with each (reason, stage), most frequent first.

    Counted over every matching job, not only the page ``recent_jobs`` returns.
    """
    return conn.execute(
        "SELECT coalesce(error_reason, status) AS reason, error_stage AS stage, count(*) AS jobs"
        " FROM jobs WHERE created_at >= %s AND (%s::text IS NULL OR status = %s)"
        " AND (%s::text IS NULL OR customer_id = %s)"
        " AND (error_reason IS NOT NULL OR status IN ('failed', 'cancelled'))"
        " GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        (since, status, status, customer_id, customer_id),
    ).fetchall()
