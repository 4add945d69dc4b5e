"""Stage runs: one row per (stage, input key), the record that makes redelivery free.

A run's row holds its status, its attempt count and the exact messages it emitted,
so a redelivered message whose run is finished is answered by re-emitting those
messages instead of redoing the work (the stage contract's short-circuit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

FINISHED = ("succeeded", "dead_lettered")


@dataclass(frozen=True)
class RunStart:
    """A run about to execute its handler."""

    run_key: str
    job_id: str
    customer_id: str | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, with the messages it emitted (JSON-ready)."""

    run_key: str
    job_id: str
    customer_id: str | None
    status: str
    attempts: int
    outputs: Sequence[dict[str, Any]]
    reason: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class FinishedRun:
    run_key: str
    status: str
    attempts: int
    outputs: list[dict[str, Any]]


def finished_runs(
    conn: psycopg.Connection[DictRow], stage: str, run_keys: Iterable[str]
) -> dict[str, FinishedRun]:
    """The runs among ``run_keys`` that already finished, by key."""
    rows = conn.execute(
        "SELECT run_key, status, attempts, outputs FROM stage_runs"
        " WHERE stage = %s AND run_key = ANY(%s) AND status = ANY(%s)",
        (stage, list(run_keys), list(FINISHED)),
    ).fetchall()
    return {r["run_key"]: FinishedRun(**r) for r in rows}


def begin_attempts(
    conn: psycopg.Connection[DictRow], stage: str, starts: Sequence[RunStart]
) -> dict[str, int]:
    """Count one more attempt for each run and return the new counts.

    Written and committed before the handler runs, so a message that kills its
    worker every time is seen to have been tried, and is dead-lettered in the end
    instead of crash-looping forever.
    """
    if not starts:
        return {}
    rows = conn.execute(
        """
        INSERT INTO stage_runs AS r (stage, run_key, job_id, customer_id, status, attempts,
                                     source_topic, source_partition, source_offset, started_at)
        SELECT %s, k, j, c, 'running', 1, t, p, o, now()
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::bigint[])
             AS u(k, j, c, t, p, o)
        ON CONFLICT (stage, run_key) DO UPDATE
           SET attempts = r.attempts + 1, status = 'running', started_at = now(),
               source_topic = EXCLUDED.source_topic, source_partition = EXCLUDED.source_partition,
               source_offset = EXCLUDED.source_offset, updated_at = now()
        RETURNING run_key, attempts
        """,
        (
            stage,
            [s.run_key for s in starts],
            [s.job_id for s in starts],
            [s.customer_id for s in starts],
            [s.topic for s in starts],
            [s.partition for s in starts],
            [s.offset for s in starts],
        ),
    ).fetchall()
    return {r["run_key"]: r["attempts"] for r in rows}


def finish_runs(
    conn: psycopg.Connection[DictRow], stage: str, outcomes: Sequence[RunOutcome]
) -> None:
    """Record how each run ended, with the outputs a redelivery will re-emit."""
    if not outcomes:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO stage_runs AS r (stage, run_key, job_id, customer_id, status, attempts,
                                         reason, error_message, outputs, started_at, finished_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())
            ON CONFLICT (stage, run_key) DO UPDATE
               SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                   reason = EXCLUDED.reason, error_message = EXCLUDED.error_message,
                   outputs = EXCLUDED.outputs, finished_at = now(), updated_at = now()
            """,
            [
                (
                    stage,
                    o.run_key,
                    o.job_id,
                    o.customer_id,
                    o.status,
                    o.attempts,
                    o.reason,
                    o.error_message,
                    Jsonb(list(o.outputs)),
                )
                for o in outcomes
            ],
        )


def reopen(conn: psycopg.Connection[DictRow], stage: str, run_key: str) -> None:
    """Make a dead-lettered run runnable again, with a fresh attempt count (for DLQ replay)."""
    conn.execute(
        "UPDATE stage_runs SET status = 'failed', attempts = 0, updated_at = now()"
        " WHERE stage = %s AND run_key = %s AND status = 'dead_lettered'",
        (stage, run_key),
    )


def runs_for_job(conn: psycopg.Connection[DictRow], job_id: str) -> list[dict[str, Any]]:
    """Every stage run of a job, oldest first."""
    return conn.execute(
        "SELECT stage, run_key, status, attempts, reason, error_message, started_at,"
        " finished_at FROM stage_runs WHERE job_id = %s ORDER BY started_at NULLS LAST",
        (job_id,),
    ).fetchall()


def runs_for_jobs(
    conn: psycopg.Connection[DictRow], job_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """``runs_for_job`` for a page of jobs in one query, by job_id (jobs without runs absent)."""
    rows = conn.execute(
        "SELECT job_id, stage, run_key, status, attempts, reason, error_message, started_at,"
        " finished_at FROM stage_runs WHERE job_id = ANY(%s) ORDER BY started_at NULLS LAST",
        (list(job_ids),),
    ).fetchall()
    by_job: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_job.setdefault(row["job_id"], []).append(row)
    return by_job
