"""``vidinsight submit`` as a customer runs it: a real process against the whole platform."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.job_view import PROGRESS_STAGES
from tests.fixtures.meeting import OWNERS, Meeting
from tests.fixtures.platform import Platform
from vidinsight.settings import REPO_ROOT

CLI_TIMEOUT_SECONDS = 360


def vidinsight(
    platform: Platform, cache: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``vidinsight ARGS`` aimed at the platform, with a cache directory of the test's own."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO_ROOT,
        env={**platform.cli_env(), "XDG_CACHE_HOME": str(cache), **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
    )


def truncated_video(meeting: Meeting, folder: Path) -> Path:
    """The meeting cut off after a third: an MP4 whose index (moov, at the end) is missing."""
    data = meeting.video.read_bytes()
    target = folder / "truncated.mp4"
    target.write_bytes(data[: len(data) // 3])
    return target


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by this module's submissions, as one user's cache directory is."""
    return tmp_path_factory.mktemp("cli-cache")


def test_submit_wait_shows_each_stage_progressing_then_insights_and_cost_by_stage(
    platform: Platform, meeting: Meeting, cache: Path
) -> None:
    done = vidinsight(platform, cache, "submit", str(meeting.video), "--wait")
    assert done.returncode == 0, done.stderr + done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    percents = [int(re.search(r"\]\s+(\d+)%", line).group(1)) for line in progress]  # type: ignore[union-attr]
    assert percents == sorted(percents) and percents[-1] == 100, progress
    assert len(set(percents)) >= 3, progress  # seen moving, not only the end
    for stage in PROGRESS_STAGES:
        assert any(f"{stage} done" in line for line in progress), (stage, progress)
    out = done.stdout
    assert re.search(r"Job job_\w+ completed in [\d.]+ s", out), out
    summary = out.split("Summary\n", 1)[1].split("\n\n", 1)[0]
    assert summary.strip() and summary.strip() != "(none)", out
    assert re.search(r"^\s+\d+:\d\d-\d+:\d\d\s+\S", out.split("Chapters\n", 1)[1], re.M), out
    actions = out.split("Action items\n", 1)[1].split("\n\n", 1)[0]
    for owner in OWNERS:
        assert f"- {owner}:" in actions, actions
    costs = out.split("Cost by stage (USD)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    by_stage = {line.split()[0]: line.split()[1] for line in costs}
    assert set(PROGRESS_STAGES) <= set(by_stage), costs
    assert all(re.fullmatch(r"\d+\.\d{6}", amount) for amount in by_stage.values()), costs
    for where in ("/insights", "/captions.vtt", "/captions.srt", "/keyframes/0.jpg"):
        assert f"{platform.gateway_url}/v1/jobs/job_" in out and where in out, (where, out)
    job_id = re.search(r"Job (job_\w+) completed", out).group(1)  # type: ignore[union-attr]
    assert f"in a browser (asks for the API key once): {platform.gateway_url}/jobs/{job_id}" in out
    assert platform.api_key not in done.stdout + done.stderr


def test_submit_json_prints_only_the_job_with_its_insights_and_a_retry_is_the_same_job(
    platform: Platform, meeting: Meeting, cache: Path
) -> None:
    done = vidinsight(platform, cache, "submit", str(meeting.video), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # nothing else on stdout
    assert document["job"]["status"] == "completed"
    insights = document["insights"]
    assert insights["job_id"] == document["job"]["job_id"]
    assert {item["owner"] for item in insights["action_items"]} >= OWNERS
    assert insights["chapters"] and insights["summary"]
    assert set(PROGRESS_STAGES) <= set(document["costs"]["by_stage"])
    again = vidinsight(platform, cache, "submit", str(meeting.video), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["job"]["job_id"] == document["job"]["job_id"]
    assert "submitted before" in again.stderr


def test_a_corrupt_video_ends_with_exit_1_and_its_reason_code(
    platform: Platform, meeting: Meeting, cache: Path, tmp_path: Path
) -> None:
    done = vidinsight(platform, cache, "submit", str(truncated_video(meeting, tmp_path)), "--wait")
    assert done.returncode == 1, done.stderr + done.stdout
    assert re.search(r"job job_\w+ failed at stage ingest: corrupt_media: ", done.stderr), (
        done.stderr
    )
    assert "ingest FAILED" in done.stderr


def test_a_wrong_api_key_is_refused_clearly_with_exit_2(
    platform: Platform, meeting: Meeting, cache: Path
) -> None:
    wrong_key = "vi_" + "x" * 40
    done = vidinsight(platform, cache, "submit", str(meeting.video), VI_API_KEY=wrong_key)
    assert done.returncode == 2
    assert "refused with 401 unauthenticated" in done.stderr and "VI_API_KEY" in done.stderr
    assert wrong_key not in done.stdout + done.stderr
    assert done.stdout == ""


def test_usage_and_connection_errors_exit_2(
    platform: Platform, meeting: Meeting, cache: Path, tmp_path: Path
) -> None:
    missing = vidinsight(platform, cache, "submit", str(tmp_path / "nothing.mp4"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_key = vidinsight(platform, cache, "submit", str(meeting.video), VI_API_KEY="")
    assert no_key.returncode == 2 and "VI_API_KEY" in no_key.stderr
    unreachable = vidinsight(
        platform, cache, "submit", str(meeting.video), VI_GATEWAY_URL="http://127.0.0.1:9"
    )
    assert unreachable.returncode == 2 and "cannot reach the gateway" in unreachable.stderr
    assert vidinsight(platform, cache, "submit").returncode == 2  # argparse: no source
