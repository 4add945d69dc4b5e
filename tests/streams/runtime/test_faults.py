"""The runtime under the faults of real operation: a database outage, a handler far
longer than max.poll.interval.ms, and a rolling deploy of the stage's workers."""

from __future__ import annotations

import re
import subprocess
import time

from tests.fixtures.kafka import consume_from
from tests.fixtures.workers import EchoPipeline, WorkerProcess, new_job_ids
from vidinsight.settings import REPO_ROOT

STACK = str(REPO_ROOT / "deploy" / "local" / "stack.sh")


def test_database_down_for_20_seconds_dead_letters_nothing_and_every_job_finishes(
    echo_pipeline: EchoPipeline,
) -> None:
    first, second = new_job_ids(10), new_job_ids(10)
    worker = echo_pipeline.start_worker("w1")
    for job_id in first:
        echo_pipeline.submit(job_id)
    echo_pipeline.wait_finished(first)
    subprocess.run([STACK, "stop", "postgres"], check=True, timeout=60)
    try:
        for job_id in second:  # arrive while the database is down
            echo_pipeline.submit(job_id)
        time.sleep(20)
        assert worker.process.poll() is None, "the worker must ride out the outage"
    finally:
        subprocess.run([STACK, "start", "postgres"], check=True, timeout=120)
    statuses = echo_pipeline.wait_finished(first + second, timeout=120)
    assert set(statuses.values()) == {"succeeded"}
    dlq = consume_from(echo_pipeline.settings.kafka_bootstrap, echo_pipeline.topics["dlq"], 1, 3)
    assert dlq == []
    retried = [line for line in worker.log_lines() if line.get("reason") == "database_unavailable"]
    assert retried, "the outage should have been seen and retried"


def test_handler_three_times_longer_than_max_poll_interval_keeps_its_partition(
    echo_pipeline: EchoPipeline,
) -> None:
    slow, behind = new_job_ids(1)[0], new_job_ids(1)[0]
    worker = echo_pipeline.start_worker("w1", VI_MAX_POLL_INTERVAL_MS="6000")
    worker.wait_for_log("partitions assigned")
    echo_pipeline.submit(slow, sleep_seconds="18")
    echo_pipeline.submit(behind)
    statuses = echo_pipeline.wait_finished([slow, behind], timeout=90)
    assert statuses == {slow: "succeeded", behind: "succeeded"}
    assert echo_pipeline.executions([slow]) == {slow: 1}
    messages = [line.get("msg", "") for line in worker.log_lines()]
    assert not [m for m in messages if "revoked" in m or "lost" in m]
    assert sum("partitions assigned" in m for m in messages) == 1


def _partition_events(worker: WorkerProcess) -> list[tuple[str, set[str]]]:
    """The worker's assignment history from its logs: ("assigned"|"revoked", partitions)."""
    events = []
    for line in worker.log_lines():
        match = re.match(r"partitions (assigned|revoked|lost): (.*)", line.get("msg", ""))
        partitions = {p.strip() for p in match.group(2).split(",")} - {""} if match else set()
        if match and partitions:
            events.append((match.group(1), partitions))
    return events


def test_rolling_deploy_processes_each_message_once_and_never_revokes_kept_partitions(
    echo_pipeline: EchoPipeline,
) -> None:
    jobs = new_job_ids(60)
    stays = echo_pipeline.start_worker("stays")
    leaves = echo_pipeline.start_worker("leaves")
    stays.wait_for_log("partitions assigned")
    leaves.wait_for_log("partitions assigned")
    for job_id in jobs[:30]:
        echo_pipeline.submit(job_id, sleep_seconds="0.2")
    joins = echo_pipeline.start_worker("joins")
    joins.wait_for_log("partitions assigned", timeout=60)
    for job_id in jobs[30:]:
        echo_pipeline.submit(job_id, sleep_seconds="0.2")
    assert leaves.terminate() == 0, "a SIGTERM'd worker exits cleanly"
    statuses = echo_pipeline.wait_finished(jobs, timeout=180)
    assert set(statuses.values()) == {"succeeded"}

    executions = echo_pipeline.executions(jobs)
    assert set(executions.values()) == {1}, "no message processed twice"
    costs = consume_from(
        echo_pipeline.settings.kafka_bootstrap, echo_pipeline.topics["costs"], 120, 5
    )
    assert len(costs) == len(jobs)

    held: set[str] = set()
    for event, partitions in _partition_events(stays):
        if event == "assigned":
            assert not partitions & held
            held |= partitions
        else:
            assert event == "revoked", "the staying worker never loses its partitions"
            held -= partitions
    kept_throughout = held & next(p for e, p in _partition_events(stays) if e == "assigned")
    assert kept_throughout, "some partitions stayed with the same worker across the deploy"
