"""The stage contract end to end: a worker turns every input into one stored result,
one output and one cost event, and a redelivery costs nothing twice."""

from __future__ import annotations

import time

from tests.fixtures.kafka import consume_from
from tests.fixtures.workers import EchoPipeline, new_job_ids


def test_worker_stores_emits_and_costs_each_message_once(echo_pipeline: EchoPipeline) -> None:
    jobs = new_job_ids(20)
    for job_id in jobs:
        echo_pipeline.submit(job_id)
    worker = echo_pipeline.start_worker("w1")
    statuses = echo_pipeline.wait_finished(jobs)
    assert set(statuses.values()) == {"succeeded"}
    bootstrap = echo_pipeline.settings.kafka_bootstrap
    outputs = consume_from(bootstrap, echo_pipeline.topics["output"], 20)
    assert sorted(bytes(m.key() or b"").decode() for m in outputs) == sorted(jobs)
    costs = consume_from(bootstrap, echo_pipeline.topics["costs"], 20)
    assert len(costs) == 20
    assert echo_pipeline.executions(jobs) == {job_id: 1 for job_id in jobs}
    assert worker.terminate() == 0


def test_redelivered_message_short_circuits_to_stored_outputs(
    echo_pipeline: EchoPipeline,
) -> None:
    [job_id] = new_job_ids(1)
    echo_pipeline.submit(job_id)
    worker = echo_pipeline.start_worker("w1")
    echo_pipeline.wait_finished([job_id])
    echo_pipeline.submit(job_id)  # the same request again, as a redelivery would bring it
    bootstrap = echo_pipeline.settings.kafka_bootstrap
    outputs = consume_from(bootstrap, echo_pipeline.topics["output"], 2)
    first, second = (m.value() for m in outputs)
    assert first == second
    assert echo_pipeline.executions([job_id]) == {job_id: 1}
    assert worker.terminate() == 0


def test_worker_logs_json_with_job_context_and_serves_prometheus_metrics(
    echo_pipeline: EchoPipeline,
) -> None:
    jobs = new_job_ids(3)
    failing = new_job_ids(1)[0]
    for job_id in jobs:
        echo_pipeline.submit(job_id)
    echo_pipeline.submit(failing, fail="permanent")
    worker = echo_pipeline.start_worker("w1")
    echo_pipeline.wait_finished([*jobs, failing])

    lines = worker.log_lines()
    assert lines and not [line for line in lines if "unparsed" in line], "every line is JSON"
    about_jobs = [line for line in lines if "job_id" in line]
    assert {line["job_id"] for line in about_jobs} >= {*jobs, failing}
    for line in about_jobs:
        assert {"job_id", "customer_id", "stage", "attempt"} <= set(line), line
    failures = [line for line in about_jobs if line["level"] in ("warning", "error")]
    assert failures and all(line.get("reason") for line in failures)

    text = worker.metrics_text()
    assert 'vidinsight_stage_messages_total{outcome="processed",stage="echo"} 3.0' in text
    assert 'vidinsight_stage_dead_letters_total{reason="corrupt_media",stage="echo"} 1.0' in text
    for name in (
        "vidinsight_stage_handler_duration_seconds_bucket",
        "vidinsight_stage_in_flight_messages",
        "vidinsight_consumer_lag_messages",
        "vidinsight_stage_last_commit_timestamp_seconds",
    ):
        assert name in text
    assert worker.terminate() == 0


def test_without_faults_every_output_and_dead_letter_is_written_exactly_once(
    echo_pipeline: EchoPipeline,
) -> None:
    jobs = new_job_ids(12)
    failing = new_job_ids(2)
    for job_id in jobs:
        echo_pipeline.submit(job_id)
    for job_id in failing:
        echo_pipeline.submit(job_id, fail="permanent")
    worker = echo_pipeline.start_worker("w1")
    echo_pipeline.wait_finished([*jobs, failing[0], failing[1]])
    time.sleep(12)  # past a stall check and a few idle poll rounds: nothing may come again
    bootstrap = echo_pipeline.settings.kafka_bootstrap
    outputs = consume_from(bootstrap, echo_pipeline.topics["output"], 100, timeout=6)
    letters = consume_from(bootstrap, echo_pipeline.topics["dlq"], 100, timeout=4)
    assert len(outputs) == len(jobs) + len(failing)  # results and failure announcements
    assert len(letters) == len(failing)
    assert echo_pipeline.executions([*jobs, *failing]) == {j: 1 for j in [*jobs, *failing]}
    assert worker.terminate() == 0
