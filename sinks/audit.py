"""The audit trail: an append-only record of every job state change, for timelines and forensics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class AuditEntry:
    job_id: str
    event: str
    customer_id: str | None = None
    stage: str | None = None
    status: str | None = None
    reason: str | None = None
    attempt: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def append(conn: psycopg.Connection[DictRow], entries: Sequence[AuditEntry]) -> None:
    """Append entries in the caller's transaction, so they exist exactly when the change does."""
    if not entries:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO audit_log (job_id, customer_id, stage, event, status, reason, attempt,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    e.job_id,
                    e.customer_id,
                    e.stage,
                    e.event,
                    e.status,
                    e.reason,
                    e.attempt,
                    Jsonb(e.detail),
                )
                for e in entries
            ],
        )


def entries_for_job(conn: psycopg.Connection[DictRow], job_id: str) -> list[dict[str, Any]]:
    """A job's audit trail, oldest first."""
    return conn.execute(
        "SELECT stage, event, status, reason, attempt, detail, created_at FROM audit_log"
        " WHERE job_id = %s ORDER BY id",
        (job_id,),
    ).fetchall()
