"""``vidinsight jobs show`` and ``jobs list``: where a job failed and why, from one command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from gateway.job_view import PROGRESS_STAGES
from tests.fixtures.meeting import Meeting
from tests.fixtures.platform import Platform, ProcessedJob
from vidinsight.settings import REPO_ROOT

COSTS_WAIT_SECONDS = 30.0


def vidinsight(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO_ROOT,
        env=platform.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def show_json(platform: Platform, job_id: str) -> dict[str, Any]:
    done = vidinsight(platform, "jobs", "show", job_id, "--json", "--logs", str(platform.log_dir))
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def failed_job(
    platform: Platform, meeting: Meeting, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A corrupt video (the meeting cut off after a third, its index lost) that failed."""
    video = tmp_path_factory.mktemp("corrupt") / "truncated.mp4"
    data = meeting.video.read_bytes()
    video.write_bytes(data[: len(data) // 3])
    job_id = platform.submit(video)
    assert platform.wait(job_id)["status"] == "failed"
    return job_id


def test_show_lists_every_stage_of_a_completed_job_with_attempts_duration_outcome_and_cost(
    platform: Platform, meeting_job: ProcessedJob
) -> None:
    deadline = time.monotonic() + COSTS_WAIT_SECONDS  # the cost aggregator trails the job
    while True:
        timeline = show_json(platform, meeting_job.job_id)
        stages = {s["stage"]: s for s in timeline["stages"]}
        costed = set(PROGRESS_STAGES) <= set(timeline["cost_by_stage_usd_micros"])
        if costed or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert timeline["job"]["status"] == "completed"
    for stage in PROGRESS_STAGES:
        summary = stages[stage]
        assert summary["outcome"] == "succeeded", summary
        assert summary["attempts"] >= 1 and summary["duration_seconds"] >= 0, summary
        assert summary["reason"] is None
    assert set(PROGRESS_STAGES) <= set(timeline["cost_by_stage_usd_micros"])
    assert sum(s["cost_usd_micros"] for s in stages.values()) == timeline["cost_total_usd_micros"]
    assert timeline["cost_total_usd_micros"] > 0
    events = [(e["stage"], e["event"]) for e in timeline["audit"]]
    assert all((stage, "stage_succeeded") in events for stage in PROGRESS_STAGES), events
    text = vidinsight(platform, "jobs", "show", meeting_job.job_id).stdout
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split() == [
        "stage", "runs", "attempts", "duration", "outcome", "reason", "cost_usd"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in table[1:]}
    for stage in PROGRESS_STAGES:
        assert rows[stage][4] == "succeeded" and rows[stage][3].endswith("s"), rows[stage]
    assert rows["total"][-1] == f"{timeline['cost_total_usd_micros'] / 1e6:.6f}"


def test_show_names_the_failing_stage_its_reason_and_the_failure_message_and_log_lines(
    platform: Platform, failed_job: str
) -> None:
    done = vidinsight(platform, "jobs", "show", failed_job, "--logs", str(platform.log_dir))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "status    failed" in out
    assert "failed at ingest: corrupt_media" in out
    failure = out.split("failure in ingest", 1)[1]
    assert "corrupt_media" in failure.splitlines()[0]
    assert "the media cannot be read" in failure or "the media is corrupt" in failure, failure
    assert "vi.jobs.requested[" in failure  # where the message was read: replayable
    logs = out.split("log lines about this job", 1)[1]
    assert "dead-lettered" in logs and "reason=corrupt_media" in logs, logs
    timeline = show_json(platform, failed_job)
    ingest = next(s for s in timeline["stages"] if s["stage"] == "ingest")
    assert (ingest["outcome"], ingest["reason"]) == ("dead_lettered", "corrupt_media")
    assert all(line["job_id"] == failed_job for line in timeline["log_lines"])


def test_list_failed_since_an_hour_groups_failures_by_reason(
    platform: Platform, failed_job: str
) -> None:
    done = vidinsight(platform, "jobs", "list", "--status", "failed", "--since", "1h", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    counts = {(c["reason"], c["stage"]): c["jobs"] for c in listing["by_reason"]}
    assert counts.get(("corrupt_media", "ingest"), 0) >= 1, counts
    assert failed_job in {job["job_id"] for job in listing["jobs"]}
    assert {job["status"] for job in listing["jobs"]} == {"failed"}
    text = vidinsight(platform, "jobs", "list", "--status", "failed", "--since", "1h").stdout
    by_reason = text.split("by reason\n", 1)[1].split("\n\n", 1)[0]
    assert "corrupt_media" in by_reason, text
    group = text.split("\ncorrupt_media (", 1)[1].split("\n\n", 1)[0]
    assert failed_job in group, text


def test_show_an_unknown_job_exits_1(platform: Platform) -> None:
    done = vidinsight(platform, "jobs", "show", "job_does_not_exist")
    assert done.returncode == 1 and "no job job_does_not_exist" in done.stderr
