"""What a run left behind, per job, and how two runs of the same batch differ.

A job is known by its name in the batch (its id differs between runs), so every stored
value is rewritten with the name in place of the id. Timestamps are dropped: they differ
between any two runs and say nothing about correctness. Everything else (the transcript,
the scenes, the analysis, the insight document, the stage runs, the ledger) must be
identical between the fault-free run and the run with faults.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True)
class JobRecord:
    """Everything stored about one job, with its id replaced by its name."""

    status: str
    reason: str | None
    transcript: list[Any]
    scenes: list[Any]
    analysis: Any
    insights: Any
    stage_runs: list[Any]
    ledger: list[Any]

    @property
    def cost_usd_micros(self) -> int:
        return sum(int(line[-1]) for line in self.ledger)

    def differences(self, other: JobRecord) -> list[str]:
        """The parts of this record that differ from ``other`` (by name)."""
        return [
            part
            for part in (
                "status",
                "reason",
                "transcript",
                "scenes",
                "analysis",
                "insights",
                "stage_runs",
                "ledger",
            )
            if getattr(self, part) != getattr(other, part)
        ]


def _neutral(value: Any, job_id: str, name: str) -> Any:
    """``value`` with the job id replaced by its name and timestamps left out."""
    if isinstance(value, dict):
        return {
            key: _neutral(item, job_id, name)
            for key, item in sorted(value.items())
            if not (key.endswith("_at") or key.endswith("_at_ms"))
        }
    if isinstance(value, list):
        return [_neutral(item, job_id, name) for item in value]
    if isinstance(value, str):
        return value.replace(job_id, name)
    return value


def _rows(conn: psycopg.Connection[Any], sql: str, job_id: str) -> list[dict[str, Any]]:
    return list(conn.execute(sql, (job_id,)).fetchall())


def snapshot(database_url: str, names: dict[str, str]) -> dict[str, JobRecord]:
    """The stored record of every job in ``names`` (job id -> name), by name."""
    records: dict[str, JobRecord] = {}
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        for job_id, name in names.items():
            records[name] = _record(conn, job_id, name)
    return records


def _record(conn: psycopg.Connection[Any], job_id: str, name: str) -> JobRecord:
    job = conn.execute(
        "SELECT status, error_reason FROM jobs WHERE job_id = %s", (job_id,)
    ).fetchone()
    assert job is not None, f"job {name} ({job_id}) is not stored"

    def neutral(rows: list[dict[str, Any]], *columns: str) -> list[Any]:
        return [_neutral([row[c] for c in columns], job_id, name) for row in rows]

    analysis = _rows(
        conn, "SELECT document, model, prompt_version FROM analyses WHERE job_id = %s", job_id
    )
    insights = _rows(
        conn,
        "SELECT document, schema_version, captions_vtt, captions_srt"
        " FROM insights WHERE job_id = %s",
        job_id,
    )
    return JobRecord(
        status=job["status"],
        reason=job["error_reason"],
        transcript=neutral(
            _rows(
                conn,
                "SELECT * FROM chunk_transcripts WHERE job_id = %s ORDER BY chunk_index",
                job_id,
            ),
            "chunk_index",
            "chunk_count",
            "start_seconds",
            "end_seconds",
            "text",
            "segments",
            "language",
        ),
        scenes=neutral(
            _rows(conn, "SELECT * FROM scenes WHERE job_id = %s ORDER BY scene_index", job_id),
            "scene_index",
            "start_seconds",
            "end_seconds",
            "keyframe_uri",
        ),
        analysis=neutral(analysis, "document", "model", "prompt_version"),
        insights=neutral(insights, "document", "schema_version", "captions_vtt", "captions_srt"),
        stage_runs=sorted(
            neutral(
                _rows(conn, "SELECT * FROM stage_runs WHERE job_id = %s", job_id),
                "stage",
                "run_key",
                "status",
                "reason",
                "outputs",
            ),
            key=json.dumps,
        ),
        ledger=sorted(
            neutral(
                _rows(conn, "SELECT * FROM cost_ledger WHERE job_id = %s", job_id),
                "stage",
                "provider",
                "model",
                "unit",
                "quantity",
                "input_tokens",
                "cached_tokens",
                "output_tokens",
                "amount_usd_micros",
            ),
            key=json.dumps,
        ),
    )


@dataclass(frozen=True)
class Comparison:
    """How the run with faults differs from the fault-free run, job by job."""

    differing: dict[str, list[str]]  # name -> the parts that differ
    cost_difference: dict[str, int]  # name -> faulted minus clean, micro-dollars
    extra_ledger_lines: dict[str, int]  # name -> lines the faulted run has beyond the clean
    missing: list[str]  # names the faulted run has no record of

    def report(self) -> dict[str, Any]:
        return {
            "jobs_compared": None,  # filled by the caller, who knows the batch
            "jobs_differing": len(self.differing),
            "differing": self.differing,
            "max_abs_cost_difference_usd_micros": max(
                (abs(d) for d in self.cost_difference.values()), default=0
            ),
            "cost_difference_usd_micros": self.cost_difference,
            "extra_ledger_lines": sum(self.extra_ledger_lines.values()),
            "missing": self.missing,
        }


def compare(clean: dict[str, JobRecord], faulted: dict[str, JobRecord]) -> Comparison:
    differing: dict[str, list[str]] = {}
    cost_difference: dict[str, int] = {}
    extra_lines: dict[str, int] = {}
    for name, expected in clean.items():
        actual = faulted.get(name)
        if actual is None:
            continue
        parts = actual.differences(expected)
        if parts:
            differing[name] = parts
        cost_difference[name] = actual.cost_usd_micros - expected.cost_usd_micros
        surplus = Counter(map(json.dumps, actual.ledger)) - Counter(
            map(json.dumps, expected.ledger)
        )
        extra_lines[name] = sum(surplus.values())
    missing = sorted(set(clean) - set(faulted))
    return Comparison(differing, cost_difference, extra_lines, missing)
