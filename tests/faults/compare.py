"""What a run left behind, per job, and how two runs of the same batch differ.

A job is known by its name in the batch (its id differs between runs), so every stored
value is rewritten with the name in place of the id. A stage run is compared by its
outcome; what a job's runs wrote, by how many messages each stage wrote to each topic (the
chunk that lands last announces the transcript, and which chunk that is, is timing); the
messages themselves are Avro bytes that carry the job id, and what they say is compared
where it is stored (transcripts, scenes, documents).
Timestamps are dropped: they differ between any two runs and say nothing about
correctness. Everything else (the transcript, the scenes, the analysis, the insight
document, the stage runs, the ledger) must be identical between the fault-free run and
the run with faults.
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
    outputs: list[Any]  # messages written, by stage and topic, over all the job's runs
    ledger: list[Any]

    @property
    def cost_usd_micros(self) -> int:
        return sum(int(line[-1]) for line in self.ledger)

    def first_difference(self, other: JobRecord, part: str) -> list[str]:
        """The first differing element of ``part``, this record's then ``other``'s, cut
        short: enough to see the cause in a report."""
        mine, theirs = getattr(self, part), getattr(other, part)
        if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
            mine, theirs = next((a, b) for a, b in zip(mine, theirs, strict=True) if a != b)
        return [json.dumps(mine, default=str)[:400], json.dumps(theirs, default=str)[:400]]

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
                "outputs",
                "ledger",
            )
            if getattr(self, part) != getattr(other, part)
        ]


def _neutral(value: Any, names: dict[str, str]) -> Any:
    """``value`` with each key of ``names`` (the job id, the run's state folder in blob
    URIs) replaced by its value, and timestamps left out."""
    if isinstance(value, dict):
        return {
            key: _neutral(item, names)
            for key, item in sorted(value.items())
            if not (key.endswith("_at") or key.endswith("_at_ms"))
        }
    if isinstance(value, list):
        return [_neutral(item, names) for item in value]
    if isinstance(value, str):
        for old, new in names.items():
            value = value.replace(old, new)
    return value


def _rows(conn: psycopg.Connection[Any], sql: str, job_id: str) -> list[dict[str, Any]]:
    return list(conn.execute(sql, (job_id,)).fetchall())


def snapshot(database_url: str, names: dict[str, str], state_dir: str) -> dict[str, JobRecord]:
    """The stored record of every job in ``names`` (job id -> name), by name."""
    records: dict[str, JobRecord] = {}
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        for job_id, name in names.items():
            records[name] = _record(conn, job_id, {job_id: name, state_dir: "<state>"})
    return records


def _record(conn: psycopg.Connection[Any], job_id: str, names: dict[str, str]) -> JobRecord:
    job = conn.execute(
        "SELECT status, error_reason FROM jobs WHERE job_id = %s", (job_id,)
    ).fetchone()
    assert job is not None, f"job {names[job_id]} ({job_id}) is not stored"

    def neutral(rows: list[dict[str, Any]], *columns: str) -> list[Any]:
        return [_neutral([row[c] for c in columns], names) for row in rows]

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
                "SELECT * FROM chunk_transcripts WHERE job_id = %s"
                " ORDER BY segment_index, chunk_index",
                job_id,
            ),
            "segment_index",
            "chunk_index",
            "chunk_count",
            "start_seconds",
            "end_seconds",
            "text",
            "segments",
            "language",
        ),
        scenes=neutral(
            _rows(
                conn,
                "SELECT * FROM scenes WHERE job_id = %s ORDER BY segment_index, scene_index",
                job_id,
            ),
            "segment_index",
            "scene_index",
            "start_seconds",
            "end_seconds",
            "keyframe_uri",
            "opens_with_cut",
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
            ),
            key=json.dumps,
        ),
        outputs=neutral(
            _rows(
                conn,
                "SELECT r.stage, o->>'topic' AS topic, count(*) AS messages FROM stage_runs r,"
                " jsonb_array_elements(r.outputs) o WHERE r.job_id = %s"
                " GROUP BY 1, 2 ORDER BY 1, 2",
                job_id,
            ),
            "stage",
            "topic",
            "messages",
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
    details: dict[str, dict[str, list[str]]]  # name -> part -> [with faults, fault-free]
    cost_difference: dict[str, int]  # name -> faulted minus clean, micro-dollars
    extra_ledger_lines: dict[str, int]  # name -> lines the faulted run has beyond the clean
    missing: list[str]  # names the faulted run has no record of

    def report(self) -> dict[str, Any]:
        return {
            "jobs_differing": len(self.differing),
            "differing": self.differing,
            "details": self.details,
            "max_abs_cost_difference_usd_micros": max(
                (abs(d) for d in self.cost_difference.values()), default=0
            ),
            "cost_difference_usd_micros": self.cost_difference,
            "extra_ledger_lines": sum(self.extra_ledger_lines.values()),
            "missing": self.missing,
        }


def compare(
    clean: dict[str, JobRecord], faulted: dict[str, JobRecord], ends_only: frozenset[str]
) -> Comparison:
    """Job by job; a job in ``ends_only`` (cancelled at a moment no two runs share) is
    compared by how it ended, since how far it got before the cancel is timing."""
    differing: dict[str, list[str]] = {}
    details: dict[str, dict[str, list[str]]] = {}
    cost_difference: dict[str, int] = {}
    extra_lines: dict[str, int] = {}
    for name, expected in clean.items():
        actual = faulted.get(name)
        if actual is None:
            continue
        parts = actual.differences(expected)
        if name in ends_only:
            parts = [part for part in parts if part in ("status", "reason")]
            if parts:
                differing[name] = parts
            continue
        if parts:
            differing[name] = parts
            details[name] = {part: actual.first_difference(expected, part) for part in parts}
        cost_difference[name] = actual.cost_usd_micros - expected.cost_usd_micros
        surplus = Counter(map(json.dumps, actual.ledger)) - Counter(
            map(json.dumps, expected.ledger)
        )
        extra_lines[name] = sum(surplus.values())
    missing = sorted(set(clean) - set(faulted))
    return Comparison(differing, details, cost_difference, extra_lines, missing)
