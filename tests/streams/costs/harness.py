"""Drives the real cost aggregator (``vidinsight costs-aggregator``) in subprocesses.

Each test gets its own cost and budget topics, its own consumer group (the Faust app
id) and its own customers, so runs never see each other's events in the shared stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.codec import Codec
from sinks.db import Pool
from streams.runtime.clients import make_producer
from tests.fixtures.network import free_port
from tests.fixtures.workers import WorkerProcess
from vidinsight.settings import REPO_ROOT, Settings


def cost_event(
    customer_id: str, job_id: str, stage: str, amount: int, **overrides: Any
) -> dict[str, Any]:
    """A CostEvent record with a fresh event id (pass ``event_id`` to repeat one)."""
    value: dict[str, Any] = {
        "event_id": f"evt-{uuid.uuid4()}",
        "customer_id": customer_id,
        "job_id": job_id,
        "stage": stage,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "unit": "tokens",
        "quantity": 100.0,
        "input_tokens": 80,
        "cached_tokens": 0,
        "output_tokens": 20,
        "amount_usd_micros": amount,
        "occurred_at_ms": int(time.time() * 1000),
    }
    value.update(overrides)
    return value


@dataclass
class CostsHarness:
    """Private topics and group for the aggregator, and the means to drive and observe it."""

    settings: Settings
    codec: Codec
    pool: Pool
    log_dir: Path
    costs_topic: str
    budgets_topic: str
    app_id: str = field(default_factory=lambda: f"test.costs.{uuid.uuid4().hex[:8]}")
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self, **env: str) -> tuple[WorkerProcess, int]:
        """Start an aggregator; return it and its metrics port."""
        port = free_port()
        log_path = self.log_dir / f"costs-{len(self.workers)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "costs-aggregator"],
            env={
                **os.environ,
                "VI_COSTS_INPUT_TOPIC": self.costs_topic,
                "VI_COSTS_BUDGET_TOPIC": self.budgets_topic,
                "VI_COSTS_APP_ID": self.app_id,
                "VI_METRICS_PORT": str(port),
                "PYTHONPATH": str(REPO_ROOT),
                **env,
            },
            cwd=REPO_ROOT,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(f"costs-{len(self.workers)}", process, log_path)
        self.workers.append(worker)
        worker.wait_for_log("cost aggregator starting")  # logged once /metrics is served
        return worker, port

    def send(self, events: Iterable[dict[str, Any]]) -> None:
        """Produce CostEvents keyed by customer with the stages' own producer (idempotent,
        lz4-compressed), and wait for every ack."""
        producer = make_producer(self.settings)
        for value in events:
            body = self.codec.encode(self.costs_topic, "CostEvent", value)
            producer.produce(self.costs_topic, key=value["customer_id"], value=body)
            producer.poll(0)
        assert producer.flush(30) == 0

    def ledger(self, customer_ids: list[str]) -> dict[str, int]:
        """Each customer's ledger total (what the customer is billed)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT customer_id, sum(amount_usd_micros)::bigint AS total, count(*) AS n"
                " FROM cost_ledger WHERE customer_id = ANY(%s) GROUP BY 1",
                (customer_ids,),
            ).fetchall()
        return {r["customer_id"]: int(r["total"]) for r in rows}

    def ledger_count(self, customer_ids: list[str]) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM cost_ledger WHERE customer_id = ANY(%s)",
                (customer_ids,),
            ).fetchone()
        return int(row["n"]) if row else 0

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
        """Poll ``check`` until true; return the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if check():
                return time.monotonic() - start
            for worker in self.workers:
                if worker.process.poll() is not None and worker.process.returncode not in (
                    0,
                    -9,
                ):
                    raise AssertionError(f"{worker.name} died: {worker.log_path.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"not within {timeout} s: {what}")

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.kill()


def metric(port: int, name: str) -> float:
    """The sum of every sample of metric ``name`` on the aggregator's /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    ]
    assert samples, f"no metric {name}"
    return sum(samples)


def spend_tables_vs_ledger(pool: Pool, customer_ids: list[str]) -> list[dict[str, Any]]:
    """Per customer and per job: every spend table's total next to the ledger's."""
    with pool.connection() as conn:
        return conn.execute(
            """
            SELECT l.customer_id, l.job_id, l.total AS ledger,
              (SELECT sum(amount_usd_micros) FROM spend_job j
                WHERE j.job_id = l.job_id AND j.customer_id = l.customer_id)::bigint AS job,
              (SELECT sum(total) FROM (SELECT customer_id, sum(amount_usd_micros) AS total
                FROM cost_ledger GROUP BY 1) c WHERE c.customer_id = l.customer_id)::bigint
                AS customer_ledger,
              (SELECT sum(amount_usd_micros) FROM spend_customer_hour h
                WHERE h.customer_id = l.customer_id)::bigint AS hour,
              (SELECT sum(amount_usd_micros) FROM spend_customer_day d
                WHERE d.customer_id = l.customer_id)::bigint AS day,
              (SELECT sum(amount_usd_micros) FROM spend_customer_stage s
                WHERE s.customer_id = l.customer_id)::bigint AS stage,
              (SELECT sum(amount_usd_micros) FROM spend_model m
                WHERE m.customer_id = l.customer_id)::bigint AS model
            FROM (SELECT customer_id, job_id, sum(amount_usd_micros)::bigint AS total
                  FROM cost_ledger WHERE customer_id = ANY(%s) GROUP BY 1, 2) l
            ORDER BY 1, 2
            """,
            (customer_ids,),
        ).fetchall()


def assert_spend_tables_sum_to_ledger(pool: Pool, customer_ids: list[str]) -> None:
    rows = spend_tables_vs_ledger(pool, customer_ids)
    assert rows, "no ledger rows"
    for row in rows:
        assert row["job"] == row["ledger"], row
        for table in ("hour", "day", "stage", "model"):
            assert row[table] == row["customer_ledger"], (table, row)
