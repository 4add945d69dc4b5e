"""The analysis of a job's transcript and the final insight document with its captions.

Both are keyed by job_id and upserted, so a redelivered or replayed message rewrites
the job's one row instead of adding another (invariant I2). Reads on behalf of a
customer join the jobs table so a customer only ever sees its own (invariant I6).
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection


def save_analysis(
    conn: Connection, job_id: str, document: dict[str, Any], model: str, prompt_version: str
) -> None:
    """Store (or replace) a job's analysis."""
    conn.execute(
        "INSERT INTO analyses (job_id, document, model, prompt_version)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET"
        " document = EXCLUDED.document, model = EXCLUDED.model,"
        " prompt_version = EXCLUDED.prompt_version",
        (job_id, Jsonb(document), model, prompt_version),
    )


def get_analysis(conn: Connection, job_id: str) -> dict[str, Any] | None:
    """A job's analysis row (document, model, prompt_version), or None."""
    return conn.execute("SELECT * FROM analyses WHERE job_id = %s", (job_id,)).fetchone()


def save_insight(
    conn: Connection,
    job_id: str,
    document: dict[str, Any],
    schema_version: str,
    captions_vtt: str | None = None,
    captions_srt: str | None = None,
) -> None:
    """Store (or replace) a job's insight document and captions."""
    conn.execute(
        "INSERT INTO insights (job_id, document, schema_version, captions_vtt, captions_srt)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET"
        " document = EXCLUDED.document, schema_version = EXCLUDED.schema_version,"
        " captions_vtt = EXCLUDED.captions_vtt, captions_srt = EXCLUDED.captions_srt",
        (job_id, Jsonb(document), schema_version, captions_vtt, captions_srt),
    )


def get_insight(
    conn: Connection, job_id: str, customer_id: str | None = None
) -> dict[str, Any] | None:
    """A job's insight row; with ``customer_id``, None unless that customer owns the job."""
    return conn.execute(
        "SELECT i.* FROM insights i JOIN jobs j USING (job_id)"
        " WHERE i.job_id = %s AND (%s::text IS NULL OR j.customer_id = %s)",
        (job_id, customer_id, customer_id),
    ).fetchone()
