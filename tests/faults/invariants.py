"""The design's invariants I1 to I6, each measured as figures on what a run left behind.

Each check returns figures and the violations it found; a report holds the figures, and
the soak passes only when no check found a violation.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

ENDED = ("completed", "failed", "cancelled")
# The supervisor's own lines in a service's log (deploy/local/supervise.sh), not the service's.
SUPERVISOR_LINE = "=== "
JOB_FIELDS = ("job_id", "customer_id", "stage", "attempt")
# Failure messages are counted by their start (what follows is often an id or a detail).
MESSAGE_PREFIX = 80
TOP_MESSAGES = 20


def json_or_none(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Check:
    """One invariant's figures and the violations behind a failure."""

    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {**self.figures, "holds": not self.violations, "violations": self.violations[:20]}


def i1_nothing_lost(database_url: str, accepted: list[str]) -> Check:
    """Every accepted job ended (completed, failed or cancelled, with a reason if failed)."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT job_id, status, error_reason FROM jobs WHERE job_id = ANY(%s)", (accepted,)
        ).fetchall()
    by_id = {row["job_id"]: row for row in rows}
    check = Check()
    lost = [job for job in accepted if by_id.get(job, {}).get("status") not in ENDED]
    unexplained = [r["job_id"] for r in rows if r["status"] == "failed" and not r["error_reason"]]
    check.figures = {
        "accepted": len(accepted),
        "ended": len(accepted) - len(lost),
        "lost": len(lost),
        "failed_without_reason": len(unexplained),
    }
    check.violations = [f"job {job} did not end" for job in lost]
    check.violations += [f"job {job} failed without a reason" for job in unexplained]
    return check


def i4_logs(lines: list[tuple[str, str]]) -> Check:
    """Every line is JSON; a line about a job names it fully; a failure line has a reason.

    Failure lines are also counted by reason and by message (the most frequent): what a
    run that passed recovered from, since its logs are deleted with its stack."""
    check = Check()
    not_json = incomplete = failures_without_reason = about_jobs = 0
    reasons: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for service, line in lines:
        if not line.strip() or line.startswith(SUPERVISOR_LINE):
            continue
        record = json_or_none(line)
        if record is None:
            not_json += 1
            check.violations.append(f"{service}: not JSON: {line[:160]}")
            continue
        failure = record.get("level") in ("error", "warning")
        if failure:
            reasons[str(record.get("reason"))] += 1
            messages[str(record.get("msg", ""))[:MESSAGE_PREFIX]] += 1
        if "job_id" not in record:
            continue
        about_jobs += 1
        missing = [name for name in JOB_FIELDS if name not in record]
        if missing:
            incomplete += 1
            check.violations.append(f"{service}: a job line without {missing}: {line[:160]}")
        if failure and not record.get("reason"):
            failures_without_reason += 1
            check.violations.append(f"{service}: a failure without a reason: {line[:160]}")
    check.figures = {
        "lines": len(lines),
        "lines_about_jobs": about_jobs,
        "not_json": not_json,
        "job_lines_missing_fields": incomplete,
        "failure_lines_without_reason": failures_without_reason,
        "failure_lines_by_reason": dict(reasons.most_common()),
        "failure_lines_by_message": dict(messages.most_common(TOP_MESSAGES)),
    }
    return check


# The spend tables the cost aggregator keeps; each must sum to the ledger per customer.
SPEND_TABLES = ("spend_job", "spend_customer_stage", "spend_customer_day", "spend_model")


def i5_costs_attributed(database_url: str) -> Check:
    """Every ledger line names its customer, job, stage, provider and model; every spend
    table sums to the ledger, per customer."""
    check = Check()
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        unattributed = conn.execute(
            "SELECT count(*) AS n FROM cost_ledger WHERE '' IN (customer_id, job_id, stage,"
            " provider, model) OR NULL IN (customer_id, job_id, stage, provider, model)"
        ).fetchone()
        ledger = {
            r["customer_id"]: int(r["total"])
            for r in conn.execute(
                "SELECT customer_id, sum(amount_usd_micros) AS total FROM cost_ledger"
                " GROUP BY customer_id"
            ).fetchall()
        }
        check.figures["ledger_lines"] = conn.execute(
            "SELECT count(*) AS n FROM cost_ledger"
        ).fetchone()["n"]  # type: ignore[index]
        check.figures["ledger_usd_micros"] = sum(ledger.values())
        for table in SPEND_TABLES:
            spent = {
                r["customer_id"]: int(r["total"])
                for r in conn.execute(
                    sql.SQL(
                        "SELECT customer_id, sum(amount_usd_micros) AS total FROM {}"
                        " GROUP BY customer_id"
                    ).format(sql.Identifier(table))
                ).fetchall()
            }
            gap = sum(abs(spent.get(c, 0) - ledger.get(c, 0)) for c in set(spent) | set(ledger))
            check.figures[f"{table}_minus_ledger_usd_micros"] = gap
            if gap:
                check.violations.append(f"{table} differs from the ledger by {gap} micro-dollars")
    count = int(unattributed["n"]) if unattributed else 0
    check.figures["unattributed_lines"] = count
    if count:
        check.violations.append(f"{count} ledger lines lack an attribution")
    return check


def i6_tenants_isolated(
    gateway_url: str, keys: dict[str, str], jobs_of: dict[str, list[str]]
) -> Check:
    """Each customer's key reads none of another customer's jobs, results or spend."""
    check = Check()
    attempts = leaks = 0
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        for customer, key in keys.items():
            auth = {"Authorization": f"Bearer {key}"}
            for other, jobs in jobs_of.items():
                if other == customer:
                    continue
                for job in jobs[:3]:
                    for path in (
                        f"/v1/jobs/{job}",
                        f"/v1/jobs/{job}/insights",
                        f"/v1/jobs/{job}/costs",
                    ):
                        attempts += 1
                        answer = client.get(path, headers=auth)
                        if answer.status_code != 404:
                            leaks += 1
                            check.violations.append(
                                f"{customer} read {path} of {other}: {answer.status_code}"
                            )
            listed = client.get("/v1/jobs", headers=auth, params={"limit": 100}).json()
            foreign = [
                j["job_id"]
                for j in listed.get("jobs", [])
                if j["job_id"] not in jobs_of.get(customer, [])
            ]
            attempts += 1
            if foreign:
                leaks += 1
                check.violations.append(f"{customer} lists jobs not its own: {foreign[:3]}")
    check.figures = {"cross_tenant_reads": attempts, "leaks": leaks}
    return check
