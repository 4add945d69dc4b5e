"""Jobs: their life cycle, their tenant-scoped listing, and the outbox to Kafka.

A job only moves forward: queued -> running -> completed | failed | cancelled, and a
finished job never changes again, so a late or redelivered message cannot revive it.
Every transition is a single conditional UPDATE, so two workers racing on the same
job cannot both win.

The jobs table is also the outbox: the gateway inserts the job and, in the same
transaction, nothing else; a relay later produces every row whose ``published_at``
is null to ``vi.jobs.requested`` and stamps it, so accepting a job never depends on
the broker being up.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection
from vidinsight.errors import PermanentError, Reason

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# For each target status, the statuses a job may move to it from.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "queued": ("queued",),
    "running": ("queued", "running"),
    "completed": ("queued", "running"),
    "failed": ("queued", "running"),
    "cancelled": ("queued", "running"),
}
MAX_ERROR_MESSAGE_CHARS = 2000


def create_job(
    conn: Connection,
    *,
    job_id: str,
    customer_id: str,
    source_uri: str,
    webhook_url: str | None = None,
    options: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Insert a job unless it exists; return ``(job, created)``.

    The same job_id, or the same customer's idempotency key with the same request
    hash, returns the existing job. A job_id owned by another customer, or an
    idempotency key reused for a different request, is a ``PermanentError(CONFLICT)``.
    """
    row = conn.execute(
        "INSERT INTO jobs (job_id, customer_id, source_uri, webhook_url, options,"
        " idempotency_key, request_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING *",
        (
            job_id,
            customer_id,
            source_uri,
            webhook_url,
            Jsonb(options or {}),
            idempotency_key,
            request_hash,
        ),
    ).fetchone()
    if row is not None:
        return row, True
    return _existing_job(conn, job_id, customer_id, idempotency_key, request_hash), False


def _existing_job(
    conn: Connection,
    job_id: str,
    customer_id: str,
    idempotency_key: str | None,
    request_hash: str | None,
) -> dict[str, Any]:
    """The job an insert conflicted with, after checking the caller may have it."""
    same_id = get_job(conn, job_id)
    if same_id is not None:
        if same_id["customer_id"] != customer_id:
            raise PermanentError(Reason.CONFLICT, f"job {job_id} belongs to another customer")
        return same_id
    same_key = conn.execute(
        "SELECT * FROM jobs WHERE customer_id = %s AND idempotency_key = %s",
        (customer_id, idempotency_key),
    ).fetchone()
    if same_key is None:  # the conflicting row vanished; the caller may simply retry
        raise PermanentError(Reason.CONFLICT, f"job {job_id} conflicts with a deleted job")
    if same_key["request_hash"] != request_hash:
        raise PermanentError(
            Reason.CONFLICT, "idempotency key already used for a different request"
        )
    return same_key


def get_job(conn: Connection, job_id: str, customer_id: str | None = None) -> dict[str, Any] | None:
    """The job, or None; with ``customer_id``, None unless that customer owns it (I6)."""
    if customer_id is None:
        return conn.execute("SELECT * FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
    return conn.execute(
        "SELECT * FROM jobs WHERE job_id = %s AND customer_id = %s", (job_id, customer_id)
    ).fetchone()


def get_jobs(conn: Connection, job_ids: list[str]) -> list[dict[str, Any]]:
    """The rows of these jobs, whoever owns them (a caller filters by owner)."""
    return conn.execute("SELECT * FROM jobs WHERE job_id = ANY(%s)", (job_ids,)).fetchall()


def set_status(conn: Connection, job_id: str, status: str) -> bool:
    """Move a job to ``status``; True if it is now there, False if the move is refused.

    Refused moves are the backward ones (a finished job never runs again). Setting
    the status a job already has is allowed while it is not finished, so a
    redelivered "started" message is harmless. An unknown job is a ``NOT_FOUND`` error.
    """
    if status not in ALLOWED_FROM:
        raise ValueError(f"unknown job status {status!r}")
    row = conn.execute(
        "UPDATE jobs SET status = %s, updated_at = now(),"
        " completed_at = CASE WHEN %s THEN now() ELSE completed_at END"
        " WHERE job_id = %s AND status = ANY(%s) RETURNING status",
        (status, status in TERMINAL_STATUSES, job_id, list(ALLOWED_FROM[status])),
    ).fetchone()
    if row is not None:
        return True
    return _current_status(conn, job_id) == status


def fail_job(
    conn: Connection,
    job_id: str,
    stage: str,
    reason: Reason | str,
    message: str,
    customer_id: str | None = None,
) -> bool:
    """Mark an unfinished job failed with the stage and reason code; False if already finished.

    With ``customer_id``, only that customer's job: a request that reused another
    customer's job id fails itself, never the job it collided with.
    """
    row = conn.execute(
        "UPDATE jobs SET status = 'failed', error_stage = %s, error_reason = %s,"
        " error_message = %s, updated_at = now(), completed_at = now()"
        " WHERE job_id = %s AND status IN ('queued', 'running')"
        " AND (%s::text IS NULL OR customer_id = %s) RETURNING job_id",
        (
            stage,
            reason.value if isinstance(reason, Reason) else reason,
            message[:MAX_ERROR_MESSAGE_CHARS],
            job_id,
            customer_id,
            customer_id,
        ),
    ).fetchone()
    if row is not None:
        return True
    _current_status(conn, job_id)  # raises NOT_FOUND for an unknown job
    return False


def _current_status(conn: Connection, job_id: str) -> str:
    """The job's status; an unknown job is a permanent NOT_FOUND."""
    row = conn.execute("SELECT status FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
    if row is None:
        raise PermanentError(Reason.NOT_FOUND, f"no job {job_id}")
    return str(row["status"])


def list_jobs(
    conn: Connection,
    customer_id: str,
    *,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a customer's jobs, newest first; returns ``(jobs, next_cursor)``.

    The cursor is an opaque keyset position (created_at, job_id), so pages stay
    stable while new jobs arrive; ``next_cursor`` is None on the last page.
    """
    after_time, after_id = _decode_cursor(cursor) if cursor else (None, None)
    rows = conn.execute(
        "SELECT * FROM jobs WHERE customer_id = %s"
        " AND (%s::text IS NULL OR status = %s)"
        " AND (%s::timestamptz IS NULL OR (created_at, job_id) < (%s, %s))"
        " ORDER BY created_at DESC, job_id DESC LIMIT %s",
        (customer_id, status, status, after_time, after_time, after_id, limit + 1),
    ).fetchall()
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, _encode_cursor(page[-1]["created_at"], page[-1]["job_id"])


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    """An opaque, URL-safe page position."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The page position inside a cursor; a forged or mangled one is INVALID_REQUEST."""
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise PermanentError(Reason.INVALID_REQUEST, "invalid page cursor") from exc


def mark_published(conn: Connection, job_id: str) -> bool:
    """Record that the job's request reached Kafka; False if it was already marked."""
    row = conn.execute(
        "UPDATE jobs SET published_at = now()"
        " WHERE job_id = %s AND published_at IS NULL RETURNING job_id",
        (job_id,),
    ).fetchone()
    return row is not None


def unpublished(
    conn: Connection, older_than: timedelta = timedelta(0), limit: int = 100
) -> list[dict[str, Any]]:
    """Outbox rows created more than ``older_than`` ago and not yet produced, oldest first.

    Rows are locked with SKIP LOCKED, so several relays share the backlog without
    producing the same job twice at the same moment (a duplicate after a crash is
    still possible and harmless: the pipeline is idempotent on job_id).
    """
    return conn.execute(
        "SELECT * FROM jobs WHERE published_at IS NULL AND created_at <= now() - %s"
        " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (older_than, limit),
    ).fetchall()


def reopen_job(conn: Connection, job_id: str, stage: str) -> bool:
    """Put a job that failed at ``stage`` back to running, for a replay of that stage's dead
    letter; False otherwise (a notify dead letter of a job failed elsewhere leaves it failed)."""
    row = conn.execute(
        "UPDATE jobs SET status = 'running', error_stage = NULL, error_reason = NULL,"
        " error_message = NULL, completed_at = NULL, updated_at = now()"
        " WHERE job_id = %s AND status = 'failed' AND error_stage = %s RETURNING job_id",
        (job_id, stage),
    ).fetchone()
    return row is not None


def count_in_flight(conn: Connection, customer_id: str) -> int:
    """How many of a customer's jobs hold capacity (the gateway's quota): queued or running,
    or cancelled while some stage still runs its work (cancelling is not free until the
    work has stopped).

    Takes a transaction-scoped advisory lock on the customer first, so concurrent
    submissions of one customer count each other instead of all passing the quota.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"jobs-in-flight:{customer_id}",))
    row = conn.execute(
        "SELECT count(*) AS n FROM jobs j WHERE j.customer_id = %s AND (j.status IN"
        " ('queued', 'running') OR (j.status = 'cancelled' AND EXISTS (SELECT 1 FROM stage_runs r"
        " WHERE r.job_id = j.job_id AND r.customer_id = j.customer_id AND r.status = 'running')))",
        (customer_id,),
    ).fetchone()
    return int(row["n"]) if row else 0


def is_cancelled(conn: Connection, job_id: str, customer_id: str | None) -> bool:
    """Whether the customer cancelled this job (checked before paid or long work)."""
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE job_id = %s AND customer_id = %s AND status = 'cancelled'",
        (job_id, customer_id),
    ).fetchone()
    return row is not None


def claim_cancel_announcement(conn: Connection, job_id: str, customer_id: str | None) -> bool:
    """True for exactly one caller per cancelled job: the one that announces it."""
    row = conn.execute(
        "UPDATE jobs SET cancel_announced_at = now() WHERE job_id = %s AND customer_id = %s"
        " AND status = 'cancelled' AND cancel_announced_at IS NULL RETURNING job_id",
        (job_id, customer_id),
    ).fetchone()
    return row is not None


def mark_many_published(conn: Connection, job_ids: list[str]) -> int:
    """``mark_published`` for a batch of delivered jobs; returns how many were newly marked."""
    rows = conn.execute(
        "UPDATE jobs SET published_at = now()"
        " WHERE job_id = ANY(%s) AND published_at IS NULL RETURNING job_id",
        (job_ids,),
    ).fetchall()
    return len(rows)


def in_flight_by_status(conn: Connection) -> dict[str, tuple[int, float]]:
    """For queued and running jobs: how many there are and the longest time one has sat there.

    The gateway exports both on every scrape so an alert can name jobs that stopped
    moving (a lost message, a hung handler) without reading the logs. Seconds count
    from the last status change, so a replayed job starts afresh.
    """
    rows = conn.execute(
        "SELECT status, count(*) AS n,"
        " coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 AS oldest_seconds"
        " FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"
    ).fetchall()
    found = {str(r["status"]): (int(r["n"]), float(r["oldest_seconds"])) for r in rows}
    return {status: found.get(status, (0, 0.0)) for status in ("queued", "running")}
