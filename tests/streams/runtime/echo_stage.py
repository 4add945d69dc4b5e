"""A stage for testing the runtime: its behaviour is chosen by each message's options.

It reads JobRequested, stores one row per job, emits one JobCompleted and one
CostEvent. Options: ``sleep_seconds`` (a long handler), ``fail`` = ``permanent`` |
``unknown`` (a handler that raises), ``requires_file`` (fails permanently until that
file exists: a cause an operator can fix, for DLQ replay), ``hang`` (never returns,
deaf to its deadline), ``wait_seconds`` (waits, giving up at its deadline as a
well-behaved handler does), ``hold_while_file`` (runs until that file is removed),
``output_bytes`` (an output of that size). Every handler execution is counted in
``echo_executions`` outside the runtime's transaction, so a test sees work that ran
twice even when its effects were deduplicated.

Topics and group come from the environment (``ECHO_*``), so each test gets its own.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import psycopg

from sinks.db import Connection, translate_errors
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult
from vidinsight.errors import PermanentError, Reason
from vidinsight.settings import get_settings

DDL = """
CREATE TABLE IF NOT EXISTS echo_results (
    job_id text PRIMARY KEY, customer_id text, source_uri text, stored_at timestamptz DEFAULT now()
);
CREATE TABLE IF NOT EXISTS echo_executions (
    id bigserial PRIMARY KEY, job_id text NOT NULL, pid int NOT NULL, at timestamptz DEFAULT now()
);
"""
COST_USD_MICROS = 1234


def _record_execution(job_id: str) -> None:
    """Count this execution; a database outage is transient, as in any real adapter."""
    with translate_errors(), psycopg.connect(get_settings().database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO echo_executions (job_id, pid) VALUES (%s, %s)", (job_id, os.getpid())
        )


def _wait(ctx: HandlerContext, until: float, while_file: str | None = None) -> None:
    """Wait as a well-behaved handler works: checking the context between steps."""
    while time.monotonic() < until and (while_file is None or Path(while_file).exists()):
        ctx.check("waiting")
        time.sleep(0.05)


def handle(inbound: Inbound, ctx: HandlerContext) -> StageResult:
    options = inbound.value.get("options") or {}
    _record_execution(inbound.job_id)
    if "sleep_seconds" in options:
        time.sleep(float(options["sleep_seconds"]))
    if "hang" in options:
        while True:
            time.sleep(1)
    if "wait_seconds" in options:
        _wait(ctx, time.monotonic() + float(options["wait_seconds"]))
    if "hold_while_file" in options:
        _wait(ctx, float("inf"), options["hold_while_file"])
    if options.get("fail") == "permanent":
        raise PermanentError(Reason.CORRUPT_MEDIA, f"job {inbound.job_id}: media is corrupt")
    if options.get("fail") == "unknown":
        raise RuntimeError(f"job {inbound.job_id}: something nobody classified")
    required = options.get("requires_file")
    if required and not Path(required).exists():
        raise PermanentError(Reason.SOURCE_UNREACHABLE, f"{required} does not exist")
    return StageResult(
        outputs=[
            Output(
                topic=os.environ["ECHO_OUTPUT_TOPIC"],
                schema="JobCompleted",
                key=inbound.job_id,
                value={
                    "job_id": inbound.job_id,
                    "customer_id": inbound.customer_id,
                    "status": "completed",
                    "reason": None,
                    "insights_uri": f"echo://{inbound.job_id}"
                    + "x" * int(options.get("output_bytes", 0)),
                    "completed_at_ms": inbound.timestamp_ms,
                },
            )
        ],
        cost_events=[
            {
                "event_id": hashlib.sha256(f"echo:{inbound.job_id}".encode()).hexdigest(),
                "customer_id": inbound.customer_id,
                "job_id": inbound.job_id,
                "stage": "echo",
                "provider": "local",
                "model": "echo",
                "unit": "compute_seconds",
                "quantity": 0.5,
                "input_tokens": 0,
                "cached_tokens": 0,
                "output_tokens": 0,
                "amount_usd_micros": COST_USD_MICROS,
                "occurred_at_ms": inbound.timestamp_ms,
            }
        ],
        payload=inbound.value["source_uri"],
    )


def store(conn: Connection, inbound: Inbound, result: StageResult) -> None:
    conn.execute(
        "INSERT INTO echo_results (job_id, customer_id, source_uri) VALUES (%s, %s, %s)"
        " ON CONFLICT (job_id) DO UPDATE SET source_uri = EXCLUDED.source_uri",
        (inbound.job_id, inbound.customer_id, result.payload),
    )


def from_env() -> Stage:
    return Stage(
        name="echo",
        input_topic=os.environ["ECHO_INPUT_TOPIC"],
        input_schema="JobRequested",
        handler=handle,
        store=store,
        dlq_topic=os.environ["ECHO_DLQ_TOPIC"],
        group_id=os.environ["ECHO_GROUP"],
        costs_topic=os.environ["ECHO_COSTS_TOPIC"],
        failure_topic=os.environ["ECHO_OUTPUT_TOPIC"],
    )
