"""Webhook delivery attempts and gateway uploads: small records the API reports back."""

from __future__ import annotations

from typing import Any

from sinks.db import Connection


def record_delivery(
    conn: Connection,
    job_id: str,
    url: str,
    attempt: int,
    status_code: int | None,
    error: str | None = None,
) -> None:
    """Append one webhook attempt and what the customer's endpoint answered."""
    conn.execute(
        "INSERT INTO webhook_deliveries (job_id, url, attempt, status_code, error)"
        " VALUES (%s, %s, %s, %s, %s)",
        (job_id, url, attempt, status_code, error),
    )


def job_deliveries(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's webhook attempts, oldest first."""
    return conn.execute(
        "SELECT * FROM webhook_deliveries WHERE job_id = %s ORDER BY id", (job_id,)
    ).fetchall()


def record_upload(
    conn: Connection, upload_id: str, customer_id: str, blob_uri: str, size: int, sha256: str
) -> None:
    """Remember an uploaded blob; recording the same upload again changes nothing."""
    conn.execute(
        "INSERT INTO uploads (upload_id, customer_id, blob_uri, bytes, sha256)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (upload_id) DO NOTHING",
        (upload_id, customer_id, blob_uri, size, sha256),
    )


def get_upload(conn: Connection, upload_id: str, customer_id: str) -> dict[str, Any] | None:
    """An upload, only for the customer who made it (I6)."""
    return conn.execute(
        "SELECT * FROM uploads WHERE upload_id = %s AND customer_id = %s",
        (upload_id, customer_id),
    ).fetchone()
