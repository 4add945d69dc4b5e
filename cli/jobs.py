"""``vidinsight jobs show JOB`` and ``vidinsight jobs list``: where a job failed and why, at once.

Both read PostgreSQL directly (operator tools, across customers). The facts come from
what the stage runtime commits with every result, so they hold in production too: the
job row (failing stage, reason code, message), the stage runs (attempts, times, the
exception message, the input's topic/partition/offset) and the audit trail, with the
cost ledger beside them. The workers' own JSON log lines about the job (retries, the
dead-letter line) are added from a log directory when there is one: ``--logs DIR``,
by default the local stack's ``<state dir>/logs``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cli.costs import usd
from sinks.db import connect
from sinks.jobs import STATUSES
from sinks.timeline import Timeline, failure_counts, job_timeline, recent_jobs
from telemetry.redaction import redact
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings

EXIT_OK, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2
# Log levels worth showing for a job: retries and failures.
FAILURE_LEVELS = ("warning", "error", "critical")
MAX_LOG_LINES = 20
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: Any) -> None:
    """Add ``jobs show`` and ``jobs list``."""
    parser = subparsers.add_parser("jobs", help="job timelines and failures (operators)")
    commands = parser.add_subparsers(dest="jobs_command", required=True)
    show = commands.add_parser("show", help="a job's stages, attempts, outcome, cost and errors")
    show.add_argument("job_id", metavar="JOB")
    show.add_argument(
        "--logs", type=Path, help="directory of the workers' JSON logs (default: <state>/logs)"
    )
    show.add_argument("--json", action="store_true", help="print the timeline as JSON")
    show.set_defaults(func=run_show)
    listing = commands.add_parser("list", help="recent jobs, failures grouped by reason")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--since", type=since_time, default="24h", help="e.g. 90m, 1h, 2d, or ISO")
    listing.add_argument("--customer", help="only this customer's jobs")
    listing.add_argument("--limit", type=int, default=100, help="jobs listed at most")
    listing.add_argument("--json", action="store_true", help="print counts and jobs as JSON")
    listing.set_defaults(func=run_list)


def since_time(text: str) -> datetime:
    """``1h`` (a duration back from now: s, m, h, d) or an ISO timestamp (UTC if naive)."""
    match = _DURATION.match(text.strip())
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a duration (1h, 30m, 2d) nor a time: {text}"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- jobs show ---------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    """Print the timeline; exit 1 for an unknown job, 2 when the database is unreachable."""
    settings = get_settings()
    try:
        with connect(settings) as conn:
            timeline = job_timeline(conn, args.job_id)
    except VidinsightError as exc:
        return _fail("show", exc)
    if timeline is None:
        print(f"vidinsight jobs show: no job {args.job_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    log_dir = args.logs or settings.state_dir / "logs"
    logs = list(failure_log_lines(log_dir, args.job_id))
    if args.json:
        print(json.dumps(timeline_document(timeline, logs), indent=2, default=str))
    else:
        print_timeline(timeline, logs, log_dir)
    return EXIT_OK


def stage_summaries(timeline: Timeline) -> list[dict[str, Any]]:
    """One entry per stage, in the order stages started: its runs summed up, with its cost."""
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for run in timeline.runs:
        by_stage.setdefault(run["stage"], []).append(run)
    summaries = [_summary(stage, runs, timeline) for stage, runs in by_stage.items()]
    for stage, cost in timeline.cost_by_stage.items():
        if stage not in by_stage:  # a cost without a run (should not happen): still show it
            summaries.append({"stage": stage, "runs": 0, "cost_usd_micros": cost})
    return summaries


def _summary(stage: str, runs: list[dict[str, Any]], timeline: Timeline) -> dict[str, Any]:
    statuses = [r["status"] for r in runs]
    outcome = next(
        (s for s in ("dead_lettered", "failed", "running") if s in statuses), "succeeded"
    )
    failed = [r for r in runs if r["status"] in ("dead_lettered", "failed") and r["reason"]]
    started = [r["started_at"] for r in runs if r["started_at"]]
    finished = [r["finished_at"] for r in runs if r["finished_at"]]
    duration = (
        (max(finished) - min(started)).total_seconds()
        if started and finished and outcome != "running"
        else None
    )
    return {
        "stage": stage,
        "runs": len(runs),
        "attempts": max(int(r["attempts"]) for r in runs),
        "outcome": outcome,
        "reason": failed[0]["reason"] if failed else None,
        "error_message": failed[0]["error_message"] if failed else None,
        "run_key": failed[0]["run_key"] if failed else None,
        "input": _input_of(failed[0]) if failed else None,
        "started_at": min(started) if started else None,
        "finished_at": max(finished) if finished else None,
        "duration_seconds": duration,
        "cost_usd_micros": timeline.cost_by_stage.get(stage, 0),
    }


def _input_of(run: dict[str, Any]) -> str | None:
    if run["source_topic"] is None:
        return None
    return f"{run['source_topic']}[{run['source_partition']}]@{run['source_offset']}"


JOB_FIELDS = (
    "job_id", "customer_id", "status", "source_uri", "error_stage", "error_reason",
    "error_message", "created_at", "updated_at", "completed_at",
)  # fmt: skip


def timeline_document(timeline: Timeline, logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The timeline as one JSON-ready document."""
    return {
        "job": {key: timeline.job[key] for key in JOB_FIELDS}
        | {"source_uri": redact(timeline.job["source_uri"])},  # a signed URL's query is a key
        "stages": stage_summaries(timeline),
        "runs": timeline.runs,
        "audit": timeline.audit,
        "cost_by_stage_usd_micros": timeline.cost_by_stage,
        "cost_total_usd_micros": sum(timeline.cost_by_stage.values()),
        "log_lines": logs,
    }


def print_timeline(timeline: Timeline, logs: list[dict[str, Any]], log_dir: Path) -> None:
    """The human timeline: the job, a table of stages, the audit trail, then the failure."""
    job = timeline.job
    print(f"job       {job['job_id']}")
    print(f"customer  {job['customer_id']}")
    print(f"status    {job['status']}{_took(job)}")
    print(f"source    {redact(job['source_uri'])}")
    print(f"created   {_when(job['created_at'])}")
    if job["error_reason"]:
        print(f"failed at {job['error_stage'] or '?'}: {job['error_reason']}")
    summaries = stage_summaries(timeline)
    print()
    if not summaries:
        print("no stage has run yet")
    else:
        _print_stage_table(summaries, sum(timeline.cost_by_stage.values()))
    if timeline.audit:
        print("\naudit trail")
        for entry in timeline.audit:
            print("  " + _audit_line(entry))
    for summary in summaries:
        if summary.get("reason"):
            _print_failure(summary)
    if logs:
        print(f"\nlog lines about this job (warnings and errors, from {log_dir})")
        for line in logs:
            print("  " + _log_text(line))


def _print_stage_table(summaries: list[dict[str, Any]], total: int) -> None:
    header = ["stage", "runs", "attempts", "duration", "outcome", "reason", "cost_usd"]
    rows = [
        [
            s["stage"],
            str(s["runs"]),
            str(s.get("attempts", "")),
            "" if s.get("duration_seconds") is None else f"{s['duration_seconds']:.2f}s",
            s.get("outcome", ""),
            s.get("reason") or "-",
            usd(s["cost_usd_micros"]),
        ]
        for s in summaries
    ]
    rows.append(["total", "", "", "", "", "", usd(total)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1].rjust(widths[-1])]).rstrip())


def _audit_line(entry: dict[str, Any]) -> str:
    detail = entry.get("detail") or {}
    parts = [
        _when(entry["created_at"]),
        f"{entry.get('stage') or '-':<10}",
        f"{entry['event']:<19}",
        f"attempt {entry['attempt']}" if entry.get("attempt") else "",
        entry.get("reason") or "",
        f"{float(detail['duration_ms']) / 1000:.2f}s" if "duration_ms" in detail else "",
        f"run {detail['run_key']}" if detail.get("run_key") else "",
    ]
    return "  ".join(part for part in parts if part)


def _print_failure(summary: dict[str, Any]) -> None:
    print(
        f"\nfailure in {summary['stage']} (run {summary['run_key']},"
        f" attempt {summary['attempts']}): {summary['reason']}"
    )
    if summary.get("input"):
        print(f"  input    {summary['input']}  (replay: vidinsight dlq replay {summary['stage']})")
    for line in (summary.get("error_message") or "(no message recorded)").splitlines():
        print(f"  {line}")


def _log_text(line: dict[str, Any]) -> str:
    fields = [line.get("ts", ""), line.get("level", ""), line.get("stage") or "-"]
    extra = [f"{k}={line[k]}" for k in ("attempt", "reason", "exception_type") if k in line]
    return "  ".join([*fields, str(line.get("msg", "")), *extra])


def _took(job: dict[str, Any]) -> str:
    if job["completed_at"] is None:
        return ""
    return f" after {(job['completed_at'] - job['created_at']).total_seconds():.1f}s"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def failure_log_lines(log_dir: Path, job_id: str) -> Iterator[dict[str, Any]]:
    """The last warning and error JSON lines about ``job_id`` in ``log_dir``'s ``*.log`` files.

    Lines that are not JSON (a crash's traceback, a library's print) are skipped: the
    platform's own lines are all JSON and carry job_id (invariant I4).
    """
    if not log_dir.is_dir():
        return
    found: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("*.log")):
        found.extend(_matching_lines(path, job_id))
    found.sort(key=lambda line: str(line.get("ts", "")))
    yield from found[-MAX_LOG_LINES:]


def _matching_lines(path: Path, job_id: str) -> Iterable[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for text in handle:
                if job_id not in text:
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if (
                    isinstance(line, dict)
                    and line.get("job_id") == job_id
                    and line.get("level") in FAILURE_LEVELS
                ):
                    yield line
    except OSError:
        return


# -- jobs list ---------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    """Print the reason counts, then the jobs grouped by reason; exit 2 without a database."""
    try:
        with connect(get_settings()) as conn:
            counts = failure_counts(conn, args.since, status=args.status, customer_id=args.customer)
            jobs = recent_jobs(
                conn, args.since, status=args.status, customer_id=args.customer, limit=args.limit
            )
    except VidinsightError as exc:
        return _fail("list", exc)
    if args.json:
        document = {"since": args.since, "by_reason": counts, "jobs": jobs}
        print(json.dumps(document, indent=2, default=str))
    else:
        print_listing(args.since, counts, jobs)
    return EXIT_OK


def print_listing(
    since: datetime, counts: list[dict[str, Any]], jobs: list[dict[str, Any]]
) -> None:
    """Counts per reason first (the question is usually "what is failing?"), then the jobs."""
    print(f"{len(jobs)} job(s) since {_when(since)}")
    if counts:
        print("\nby reason")
        width = max(len(str(c["reason"])) for c in counts)
        for count in counts:
            print(f"  {count['jobs']:>5}  {count['reason']:<{width}}  at {count['stage'] or '-'}")
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(job["error_reason"] or job["status"], []).append(job)
    for group, members in groups.items():
        print(f"\n{group} ({len(members)})")
        for job in members:
            print("  " + _job_line(job))


def _job_line(job: dict[str, Any]) -> str:
    parts = [job["job_id"], job["customer_id"], job["status"], _when(job["created_at"])]
    if job["error_stage"]:
        parts.append(f"at {job['error_stage']}")
    if job["error_message"]:
        parts.append(job["error_message"].splitlines()[0][:120])
    return "  ".join(parts)


def _fail(command: str, exc: VidinsightError) -> int:
    print(f"vidinsight jobs {command}: {exc}", file=sys.stderr)
    return EXIT_ERROR
