"""The stage contract end to end: a worker turns every input into one stored result,
one output and one cost event, and a redelivery costs nothing twice."""

from __future__ import annotations

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
