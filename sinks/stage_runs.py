"""Stage runs: one row per (stage, input key), the record that makes redelivery free.

A run's row holds its status, its attempt count and the exact messages it emitted,
so a redelivered message whose run is finished is answered by re-emitting those
messages instead of redoing the work (the stage contract's short-circuit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

FINISHED = ("succeeded", "dead_lettered", "cancelled")
NO_CUSTOMER = ""  # the customer of a message that could not be decoded


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


@dataclass(frozen=True)
class Begun:
    """A run that is not finished, with its attempt just counted and why the last one ended."""

    attempts: int
    previous_reason: str | None


CANCELLED = "cancelled"


def begin(
    conn: psycopg.Connection[DictRow], stage: str, start: RunStart, honours_cancel: bool
) -> FinishedRun | Begun | str:
    """Where a run stands as its message arrives, in one statement (a round trip matters
    for light messages): the run if it already finished (its outputs are re-emitted
    instead of redoing it); ``CANCELLED`` if the customer cancelled the job (and
    ``honours_cancel``); else the run with one more attempt counted, as its handler starts.

    The attempt is committed before the handler runs, so a message that kills its worker
    every time is seen to have been tried, and is dead-lettered in the end instead of
    crash-looping forever; one message at a time, so a batch's later messages are not
    charged for an attempt they never ran. The commit does not wait for the disk: the
    count guards against worker crashes, and one lost with a database crash costs one try.
    """
    row = conn.execute(
        """
        WITH settings AS (SELECT set_config('synchronous_commit', 'off', true)),
        prior AS (
            SELECT status, attempts, outputs, reason FROM stage_runs
            WHERE stage = %(stage)s AND customer_id = %(customer)s AND run_key = %(key)s
        ),
        cancel AS (
            SELECT 1 FROM jobs WHERE %(honours)s AND job_id = %(job)s
               AND customer_id = %(customer)s AND status = 'cancelled'
        ),
        counted AS (
            INSERT INTO stage_runs AS r (stage, run_key, job_id, customer_id, status, attempts,
                                         source_topic, source_partition, source_offset,
                                         started_at)
            SELECT %(stage)s, %(key)s, %(job)s, %(customer)s, 'running', 1, %(topic)s,
                   %(partition)s, %(offset)s, now()
            FROM settings
            WHERE NOT EXISTS (SELECT 1 FROM prior WHERE status = ANY(%(finished)s))
              AND NOT EXISTS (SELECT 1 FROM cancel)
            ON CONFLICT (stage, customer_id, run_key) DO UPDATE
               SET attempts = r.attempts + 1, status = 'running', started_at = now(),
                   source_topic = EXCLUDED.source_topic,
                   source_partition = EXCLUDED.source_partition,
                   source_offset = EXCLUDED.source_offset, updated_at = now()
            RETURNING attempts
        )
        SELECT p.status, p.attempts AS prior_attempts, p.outputs, p.reason,
               EXISTS (SELECT 1 FROM cancel) AS cancelled,
               (SELECT attempts FROM counted) AS attempts
        FROM (SELECT 1) AS one LEFT JOIN prior AS p ON true
        """,
        {
            "stage": stage,
            "key": start.run_key,
            "job": start.job_id,
            "customer": start.customer_id or NO_CUSTOMER,
            "topic": start.topic,
            "partition": start.partition,
            "offset": start.offset,
            "honours": honours_cancel,
            "finished": list(FINISHED),
        },
    ).fetchone()
    assert row is not None
    if row["status"] in FINISHED:
        return FinishedRun(start.run_key, row["status"], row["prior_attempts"], row["outputs"])
    if row["cancelled"]:
        return CANCELLED
    return Begun(attempts=int(row["attempts"]), previous_reason=row["reason"])


def finished_run(
    conn: psycopg.Connection[DictRow], stage: str, customer_id: str | None, run_key: str
) -> FinishedRun | None:
    """The run, if it already finished (its outputs are re-emitted instead of redoing it)."""
    row = conn.execute(
        "SELECT run_key, status, attempts, outputs FROM stage_runs"
        " WHERE stage = %s AND customer_id = %s AND run_key = %s AND status = ANY(%s)",
        (stage, customer_id or NO_CUSTOMER, run_key, list(FINISHED)),
    ).fetchone()
    return FinishedRun(**row) if row else None


def release_attempt(
    conn: psycopg.Connection[DictRow], stage: str, customer_id: str | None, run_key: str
) -> None:
    """Take back an attempt the runtime itself interrupted (its partition was revoked).

    The delivery bound is for messages that kill their worker; a rebalance is not the
    message's doing, so it must not bring the message closer to the dead-letter topic.
    """
    conn.execute(
        "UPDATE stage_runs SET attempts = greatest(attempts - 1, 0), updated_at = now()"
        " WHERE stage = %s AND customer_id = %s AND run_key = %s AND status = 'running'",
        (stage, customer_id or NO_CUSTOMER, run_key),
    )


def note_failure(
    conn: psycopg.Connection[DictRow],
    stage: str,
    customer_id: str | None,
    run_key: str,
    reason: str,
    message: str,
) -> None:
    """Record why an unfinished attempt ended (a hung handler) for the next delivery to read."""
    conn.execute(
        "UPDATE stage_runs SET status = 'failed', reason = %s, error_message = %s,"
        " updated_at = now() WHERE stage = %s AND customer_id = %s AND run_key = %s"
        " AND status = 'running'",
        (reason, message[:4000], stage, customer_id or NO_CUSTOMER, run_key),
    )


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
            ON CONFLICT (stage, customer_id, run_key) DO UPDATE
               SET status = EXCLUDED.status, attempts = greatest(r.attempts, EXCLUDED.attempts),
                   reason = EXCLUDED.reason, error_message = EXCLUDED.error_message,
                   outputs = EXCLUDED.outputs, finished_at = now(), updated_at = now()
            """,
            [
                (
                    stage,
                    o.run_key,
                    o.job_id,
                    o.customer_id or NO_CUSTOMER,
                    o.status,
                    o.attempts,
                    o.reason,
                    o.error_message,
                    Jsonb(list(o.outputs)),
                )
                for o in outcomes
            ],
        )


def reopen(
    conn: psycopg.Connection[DictRow], stage: str, customer_id: str | None, run_key: str
) -> None:
    """Make a dead-lettered run runnable again, with a fresh attempt count (for DLQ replay)."""
    conn.execute(
        "UPDATE stage_runs SET status = 'failed', attempts = 0, reason = NULL, updated_at = now()"
        " WHERE stage = %s AND customer_id = %s AND run_key = %s AND status = 'dead_lettered'",
        (stage, customer_id or NO_CUSTOMER, run_key),
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
