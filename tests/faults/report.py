"""The soak's report: every invariant as figures, what was injected when, and what broke.

Written as JSON (``bench/results/soak-*.json`` for the full profile) and printed as a
short text a person reads first; ``violations`` is empty exactly when the soak passed.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from tests.faults.compare import compare
from tests.faults.harness import Profile, RunResult


def machine() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(pages / 2**30, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def jobs(run: RunResult) -> dict[str, Any]:
    outcomes = Counter(o["status"] for o in run.outcomes.values())
    reasons = Counter(o["reason"] for o in run.outcomes.values() if o["status"] == "failed")
    burst = run.burst
    return {
        "batch_and_bad_inputs": len(run.names),
        "burst_requests": burst.sent if burst else 0,
        "accepted": len(run.accepted),
        "completed": outcomes["completed"],
        "failed_by_reason": dict(reasons),
        "cancelled": outcomes["cancelled"],
        "lost": run.checks["I1"].figures["lost"],
    }


def build(
    profile: Profile,
    seed: int,
    clean: RunResult,
    faulted: RunResult,
    cases: int,
    cancelled: frozenset[str],
) -> dict[str, Any]:
    """The whole report of both runs of a batch with ``cases`` bad inputs, of which the
    ``cancelled`` ones are compared by how they ended only."""
    comparison = compare(clean.records, faulted.records, cancelled)
    wrong_ends = {
        **{f"fault-free {name}": problem for name, problem in clean.wrong_ends.items()},
        **{f"with faults {name}": problem for name, problem in faulted.wrong_ends.items()},
    }
    report: dict[str, Any] = {
        "profile": profile.name,
        "seed": seed,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "runs": {"fault_free_seconds": clean.seconds, "with_faults_seconds": faulted.seconds},
        "jobs": jobs(faulted),
        "bad_inputs": {"cases": cases, "ended_wrong": wrong_ends},
        "burst": (
            {**faulted.burst.report(), "waited_for_the_gateway_seconds": faulted.burst_wait}
            if faulted.burst
            else None
        ),
        "faults": [fault.report() for fault in faulted.faults],
        "faults_by_kind": dict(Counter(fault.kind for fault in faulted.faults)),
        "invariants": invariants(clean, faulted, comparison.report()),
        "waits": faulted.waits,
        "stalls": {
            "bound_seconds": profile.stall_bound_seconds,
            "longest_by_group": {
                g: f["longest_stall_seconds"] for g, f in faulted.lag["groups"].items()
            },
        },
        "peak_lag": {g: f["peak_lag"] for g, f in faulted.lag["groups"].items()},
        "recovery_after_faults": faulted.recovery,
        "harness_errors": clean.harness_errors + faulted.harness_errors,
    }
    report["violations"] = violations(report, clean, faulted)
    return report


def invariants(clean: RunResult, faulted: RunResult, comparison: dict[str, Any]) -> dict[str, Any]:
    """I1 to I6 as figures, for the run with faults (and the fault-free run's I1)."""
    duplicates = {
        "extra_ledger_lines": comparison["extra_ledger_lines"],
        "duplicate_webhook_deliveries": faulted.webhooks.get("duplicate_deliveries", 0),
        "webhook_redeliveries_same_id": faulted.webhooks.get("repeated_same_id", 0),
        "jobs_with_differing_results": comparison["jobs_differing"],
    }
    return {
        "I1_nothing_lost": faulted.checks["I1"].report()
        | {"fault_free_lost": clean.checks["I1"].figures["lost"]},
        "I2_effects_once": {**duplicates, **comparison},
        "I3_no_blocked_partition": {
            "garbage": faulted.garbage,
            "longest_stall_seconds": max(
                (f["longest_stall_seconds"] for f in faulted.lag["groups"].values()), default=0
            ),
            "stall_violations": faulted.stall_violations,
            "lag_at_end": {g: f["lag_at_end"] for g, f in faulted.lag["groups"].items()},
        },
        "I4_logs": faulted.checks["I4"].report(),
        "I5_costs_attributed": faulted.checks["I5"].report(),
        "I6_tenants_isolated": faulted.checks["I6"].report(),
    }


def violations(report: dict[str, Any], clean: RunResult, faulted: RunResult) -> list[str]:
    """Everything that makes the soak fail, one line each."""
    found: list[str] = []
    for run in (clean, faulted):
        label = "with faults" if run.faulted else "fault-free"
        found += [
            f"{label} {key}: {v}"
            for key, check in run.checks.items()
            for v in check.violations[:10]
        ]
    i2 = report["invariants"]["I2_effects_once"]
    if i2["jobs_differing"]:
        found.append(f"I2: results differ from the fault-free run: {i2['differing']}")
    if i2["max_abs_cost_difference_usd_micros"]:
        found.append(f"I2: cost differs by up to {i2['max_abs_cost_difference_usd_micros']} µ$")
    if i2["missing"]:
        found.append(f"I2: jobs missing from the run with faults: {i2['missing']}")
    if i2["extra_ledger_lines"] or i2["duplicate_webhook_deliveries"]:
        found.append("I2: duplicated effects")
    i3 = report["invariants"]["I3_no_blocked_partition"]
    found += [f"I3: {v}" for v in i3["stall_violations"]]
    if i3["garbage"]["missing"]:
        found.append(f"I3: garbage not dead-lettered: {i3['garbage']['missing']}")
    if any(i3["lag_at_end"].values()):
        found.append(f"I3: lag left at the end: {i3['lag_at_end']}")
    if report["bad_inputs"]["ended_wrong"]:
        found.append(f"bad inputs ended wrong: {report['bad_inputs']['ended_wrong']}")
    burst = faulted.burst
    if burst is not None:
        found += [f"burst: {problem}" for problem in burst.problems()]
    found += [f"harness: {error}" for error in report["harness_errors"]]
    return found


def summary(report: dict[str, Any]) -> str:
    """The lines a person reads first."""
    inv = report["invariants"]
    jobs_ = report["jobs"]
    lines = [
        f"soak {report['profile']} seed={report['seed']} on {report['machine']['cpus']} CPUs,"
        f" {report['machine']['memory_gib']} GiB: fault-free {report['runs']['fault_free_seconds']}"
        f" s, with faults {report['runs']['with_faults_seconds']} s",
        f"jobs: accepted {jobs_['accepted']}, completed {jobs_['completed']}, failed"
        f" {jobs_['failed_by_reason']}, cancelled {jobs_['cancelled']}, lost {jobs_['lost']}",
        f"faults: {report['faults_by_kind']}",
        f"I2: differing {inv['I2_effects_once']['jobs_differing']}, max cost difference"
        f" {inv['I2_effects_once']['max_abs_cost_difference_usd_micros']} µ$, extra ledger lines"
        f" {inv['I2_effects_once']['extra_ledger_lines']}, duplicate webhooks"
        f" {inv['I2_effects_once']['duplicate_webhook_deliveries']}",
        f"I3: longest stall {inv['I3_no_blocked_partition']['longest_stall_seconds']} s"
        f" (bound {report['stalls']['bound_seconds']} s), garbage"
        f" {inv['I3_no_blocked_partition']['garbage']}",
        f"burst: {report['burst']}",
        f"violations: {len(report['violations'])}",
        *[f"  - {v}" for v in report["violations"][:30]],
    ]
    return "\n".join(lines)
