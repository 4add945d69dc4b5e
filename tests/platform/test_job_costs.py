"""A processed video's costs: the gateway and ``vidinsight costs report`` tell the same story.

The meeting video travels the whole platform (tests/fixtures/platform.py); its stages
emit cost events, the cost aggregator writes them to the ledger and the spend tables,
and the customer's API and the operator's CLI must then agree to the micro-dollar.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys

from tests.fixtures.platform import WORKING_STAGES, Platform, ProcessedJob
from vidinsight.settings import REPO_ROOT


def _cli_report(platform: Platform, *args: str) -> dict[str, int]:
    """``vidinsight costs report --format csv ...`` as an operator runs it: key -> micro-USD."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "costs", "report", "--format", "csv", *args],
        env=platform.cli_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = csv.DictReader(io.StringIO(result.stdout))
    return {row[_key_column(args)]: _micros(row["amount_usd"]) for row in rows}


def _key_column(args: tuple[str, ...]) -> str:
    return args[args.index("--by") + 1]


def _micros(amount_usd: str) -> int:
    whole, _, fraction = amount_usd.partition(".")
    return int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))


def test_a_processed_video_costs_the_same_through_the_api_and_the_cli(
    platform: Platform, meeting_job: ProcessedJob
) -> None:
    job_id = meeting_job.job_id
    costs = platform.settled_costs(job_id)

    assert set(costs["by_stage"]) >= WORKING_STAGES, costs["by_stage"]
    assert costs["total_usd_micros"] > 0
    assert sum(int(e["amount_usd_micros"]) for e in costs["events"]) == costs["total_usd_micros"]

    customer = platform.customer_id
    by_job = _cli_report(platform, "--customer", customer, "--by", "job")
    assert by_job[job_id] == costs["total_usd_micros"]
    by_stage = _cli_report(platform, "--customer", customer, "--job", job_id, "--by", "stage")
    assert set(by_stage) == set(costs["by_stage"])
    api_by_stage = {e["stage"]: 0 for e in costs["events"]}
    for event in costs["events"]:
        api_by_stage[event["stage"]] += int(event["amount_usd_micros"])
    assert by_stage == api_by_stage
