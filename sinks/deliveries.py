"""Webhook delivery attempts: what each customer endpoint answered, for the API to report."""

from __future__ import annotations

from typing import Any

from sinks.db import Connection
from telemetry.redaction import public_message, redact


def record_delivery(
    conn: Connection,
    job_id: str,
    url: str,
    attempt: int,
    status_code: int | None,
    error: str | None = None,
) -> None:
    """Append one webhook attempt and what the customer's endpoint answered.

    A receiver's URL often carries its token in the query: it is stored without it.
    """
    conn.execute(
        "INSERT INTO webhook_deliveries (job_id, url, attempt, status_code, error)"
        " VALUES (%s, %s, %s, %s, %s)",
        (job_id, redact(url), attempt, status_code, error and public_message(error)),
    )


def job_deliveries(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's webhook attempts, oldest first."""
    return conn.execute(
        "SELECT * FROM webhook_deliveries WHERE job_id = %s ORDER BY id", (job_id,)
    ).fetchall()
