"""Every handler runs under a deadline: a message past it ends ``stage_timeout`` and the
partition moves on; a handler that will not give up makes its worker exit to be restarted,
and the attempt it used is counted, so a message that hangs every time ends in the DLQ."""

from __future__ import annotations

import json
import re

from streams.runtime.backoff import backoff_seconds
from streams.runtime.dead_letter import header_map
from tests.fixtures.kafka import consume_from
from tests.fixtures.workers import EchoPipeline, new_job_ids

DEADLINE_SECONDS = 3.0
GRACE_SECONDS = 2.0
# What a loaded CI machine may add to the deadline and grace before the runtime acts.
SLACK_SECONDS = 8.0
DEADLINES = {
    "VI_STAGE_DEADLINE_BASE_SECONDS": json.dumps({"default": 300, "echo": DEADLINE_SECONDS}),
    "VI_STAGE_DEADLINE_GRACE_SECONDS": str(GRACE_SECONDS),
}


def test_a_handler_that_never_returns_ends_stage_timeout_and_its_worker_restarts(
    echo_pipeline: EchoPipeline,
) -> None:
    hung, *behind = new_job_ids(4)
    echo_pipeline.submit(hung, partition=0, hang="forever")
    for job_id in behind:
        echo_pipeline.submit(job_id, partition=0)
    # One timeout is the bound here, so the first hang parks the message.
    first = echo_pipeline.start_worker("w1", VI_UNKNOWN_ERROR_MAX_ATTEMPTS="1", **DEADLINES)

    # The thread cannot be killed: the worker parks the message, commits, and exits so
    # that its supervisor restarts it.
    assert first.process.wait(60) == 70
    runs = echo_pipeline.runs([hung])
    assert runs[hung]["status"] == "dead_lettered"
    assert runs[hung]["reason"] == "stage_timeout"
    with echo_pipeline.pool.connection() as conn:
        started = conn.execute(
            "SELECT min(at) AS at FROM echo_executions WHERE job_id = %s", (hung,)
        ).fetchone()
    assert started is not None
    took = (runs[hung]["finished_at"] - started["at"]).total_seconds()
    assert DEADLINE_SECONDS <= took <= DEADLINE_SECONDS + GRACE_SECONDS + SLACK_SECONDS
    [letter] = consume_from(echo_pipeline.settings.kafka_bootstrap, echo_pipeline.topics["dlq"], 1)
    assert header_map(letter.headers())["vi-reason"] == "stage_timeout"
    exited = [line for line in first.log_lines() if line.get("reason") == "stage_timeout"]
    assert exited and all(line.get("stage") == "echo" for line in exited)

    # The restarted worker (what the supervisor does) takes the partition on from there.
    echo_pipeline.start_worker("w2", **DEADLINES)
    statuses = echo_pipeline.wait_finished(behind)
    assert set(statuses.values()) == {"succeeded"}
    assert echo_pipeline.executions([hung]) == {hung: 1}


def test_a_handler_that_gives_up_at_its_deadline_is_retried_then_parked(
    echo_pipeline: EchoPipeline,
) -> None:
    slow, *behind = new_job_ids(3)
    echo_pipeline.submit(slow, partition=0, wait_seconds="600")
    for job_id in behind:
        echo_pipeline.submit(job_id, partition=0)
    worker = echo_pipeline.start_worker("w1", VI_UNKNOWN_ERROR_MAX_ATTEMPTS="2", **DEADLINES)

    statuses = echo_pipeline.wait_finished([slow, *behind])
    assert statuses == {slow: "dead_lettered", **{job_id: "succeeded" for job_id in behind}}
    assert echo_pipeline.runs([slow])[slow]["reason"] == "stage_timeout"
    assert echo_pipeline.executions([slow]) == {slow: 2}  # the bound: two tries
    text = worker.metrics_text()
    assert _sample(text, "vidinsight_stage_timeouts_total") == 2.0
    assert _sample(text, "vidinsight_stage_hung_handlers_total") == 0.0
    assert worker.process.poll() is None, "a handler that gives up leaves its worker healthy"
    assert worker.terminate() == 0


def test_the_backoff_of_a_long_outage_stays_at_its_cap() -> None:
    for retry in (5_000, 10**6):
        delay = backoff_seconds(retry, initial=0.2, maximum=10.0)
        assert 5.0 <= delay <= 10.0
    assert backoff_seconds(1, initial=0.2, maximum=10.0) <= 0.2


def _sample(text: str, name: str) -> float:
    """The value of the echo stage's sample of metric ``name``."""
    match = re.search(rf'^{name}{{stage="echo"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} not exported"
    return float(match.group(1))
