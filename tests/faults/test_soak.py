"""The soak's short profile: the whole platform through every kind of fault, in ``make test``.

The same harness as ``make soak`` (tests/faults/soak.py) with a smaller batch, fewer worker
kills and shorter outages: a private stack of its own, a fault-free run and a run with
faults, compared job by job. It fails on any broken invariant, with the report's lines.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.faults.report import summary
from tests.faults.soak import SHORT, run_soak


def test_the_short_soak_keeps_every_invariant_under_faults(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(10**6)
    report = run_soak(SHORT, seed)
    (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=2, default=str))
    assert report["violations"] == [], summary(report)
    assert report["jobs"]["lost"] == 0
    assert report["invariants"]["I2_effects_once"]["max_abs_cost_difference_usd_micros"] == 0
    assert report["faults_by_kind"]["kill_worker"] == SHORT.plan.worker_kills
