"""``vidinsight dlq replay`` brings a dead letter of every stage, notify included, to the
end a first delivery would have reached, once its cause is fixed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.meeting import Meeting
from tests.fixtures.network import Receiver
from tests.fixtures.platform import Platform
from topics.catalogue import STAGE_NAMES
from vidinsight.settings import REPO_ROOT


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver(failures=0)
    yield endpoint
    endpoint.close()


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_a_dead_letter_of_each_stage_is_replayed_to_a_completed_job(
    platform: Platform, meeting: Meeting, receiver: Receiver, stage: str
) -> None:
    customer_id, api_key = platform.new_customer(f"replay-{stage}-{uuid.uuid4().hex[:6]}")
    hook = f"http://127.0.0.1:{receiver.port}/hooks"
    platform.refuse(stage, customer_id)
    job_id = platform.submit(meeting.video, api_key=api_key, webhook_url=hook)

    if stage == "notify":  # the job completed; only telling the customer failed
        assert platform.wait(job_id, api_key=api_key)["status"] == "completed"
        _wait_dead_lettered(platform, stage, job_id)
        assert _events(receiver) == []
    else:
        failed = platform.wait(job_id, api_key=api_key)
        assert failed["status"] == "failed", failed
        assert failed["error"]["stage"] == stage, failed
        _wait_for_event(receiver, "job.failed")

    platform.allow(stage, customer_id)
    replayed = subprocess.run(
        [sys.executable, "-m", "cli.main", "dlq", "replay", stage, "--job", job_id],
        cwd=REPO_ROOT,
        env=platform.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "replayed" in replayed.stdout

    assert platform.wait(job_id, api_key=api_key, until=frozenset({"completed"}))
    _wait_for_event(receiver, "job.completed")
    assert [e["type"] for e in _events(receiver)].count("job.completed") == 1


def _events(receiver: Receiver) -> list[dict[str, str]]:
    return [json.loads(body) for _, body in receiver.calls]


def _wait_for_event(receiver: Receiver, kind: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while kind not in [event["type"] for event in _events(receiver)]:
        assert time.monotonic() < deadline, f"no {kind} webhook in {timeout} s"
        time.sleep(0.3)


def _wait_dead_lettered(platform: Platform, stage: str, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with platform.pool.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM stage_runs WHERE stage = %s AND job_id = %s"
                " AND status = 'dead_lettered'",
                (stage, job_id),
            ).fetchone()
        if row is not None:
            return
        assert time.monotonic() < deadline, f"{stage} did not dead-letter {job_id}"
        time.sleep(0.3)
