"""What ``make up`` starts is kept running: a worker killed while jobs run is back within
seconds without anyone typing a command, and every job still completes (invariant I1)."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.fixtures.meeting import Meeting
from tests.fixtures.platform import Platform, PlatformProcess
from topics.catalogue import STAGE_NAMES

# Restart delay (1 s) plus a Python worker's start, on a loaded two-core machine.
BACK_WITHIN_SECONDS = 30.0


def test_each_worker_killed_in_turn_is_back_within_seconds_and_every_job_completes(
    platform: Platform, meeting: Meeting
) -> None:
    jobs = [platform.submit(meeting.video) for _ in range(3)]
    took = {}
    for stage in STAGE_NAMES:
        worker = platform.processes[f"worker-{stage}"]
        restarts = worker.restarts()
        killed = _running_pid(worker)
        os.kill(killed, signal.SIGKILL)
        took[stage] = _wait_back(worker, killed)
        assert worker.restarts() == restarts + 1
    assert all(seconds <= BACK_WITHIN_SECONDS for seconds in took.values()), took
    ended = {job_id: platform.wait(job_id)["status"] for job_id in jobs}
    assert ended == {job_id: "completed" for job_id in jobs}


def _running_pid(worker: PlatformProcess) -> int:
    """The worker's current pid, once it serves its metrics (it may be restarting)."""
    _wait_serving(worker, time.monotonic() + BACK_WITHIN_SECONDS)
    pid = worker.child_pid()
    assert pid is not None
    return pid


def _wait_back(worker: PlatformProcess, killed: int) -> float:
    """Seconds until a new process of ``worker`` serves its metrics."""
    began = time.monotonic()
    deadline = began + 3 * BACK_WITHIN_SECONDS
    while worker.child_pid() in (None, killed):
        assert worker.process.poll() is None, "the supervisor itself exited"
        assert time.monotonic() < deadline, f"{worker.name} not restarted"
        time.sleep(0.1)
    _wait_serving(worker, deadline)
    return time.monotonic() - began


def _wait_serving(worker: PlatformProcess, deadline: float) -> None:
    while True:
        try:
            httpx.get(worker.metrics_url, timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{worker.name} does not serve its metrics"
            time.sleep(0.2)
