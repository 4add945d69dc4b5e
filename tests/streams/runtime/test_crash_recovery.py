"""A worker killed with SIGKILL at any step of the contract, then restarted, leaves the
same end state as a run without the kill: results, outputs (by key) and cost ledger."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from sinks import ledger
from sinks.db import Pool
from streams.runtime.failpoints import Failpoint
from tests.fixtures.workers import EchoPipeline, new_job_ids
from tests.streams.runtime.echo_stage import COST_USD_MICROS

JOBS = 6


def read_to_end(bootstrap: str, topic: str) -> list[Message]:
    """Every message of ``topic`` up to its current end: assigned, so no group join to wait for."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends, start = {}, []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                start.append(TopicPartition(topic, p, low))
        consumer.assign(start)
        messages: list[Message] = []
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            messages.append(message)
            if (message.offset() or 0) + 1 >= ends.get(message.partition() or 0, 0):
                ends.pop(message.partition() or 0, None)
        assert not ends, f"{topic}: partitions {sorted(ends)} not read to their end in 30 s"
        return messages
    finally:
        consumer.close()


def end_state(pipeline: EchoPipeline, jobs: list[str], pool: Pool) -> dict[str, object]:
    """What a user of the stage can observe once every job is finished."""
    bootstrap = pipeline.settings.kafka_bootstrap
    outputs: dict[str, set[bytes]] = defaultdict(set)
    for message in read_to_end(bootstrap, pipeline.topics["output"]):
        outputs[bytes(message.key() or b"").decode()].add(bytes(message.value() or b""))
    costs = [
        pipeline.codec.decode(pipeline.topics["costs"], m.value())
        for m in read_to_end(bootstrap, pipeline.topics["costs"])
    ]
    with pool.connection() as conn:
        ledger.record_cost_events(conn, [ledger.CostEvent.from_record(c) for c in costs])
        results = conn.execute(
            "SELECT job_id, source_uri FROM echo_results WHERE job_id = ANY(%s)", (jobs,)
        ).fetchall()
        ledger_rows = conn.execute(
            "SELECT job_id, amount_usd_micros FROM cost_ledger WHERE job_id = ANY(%s)", (jobs,)
        ).fetchall()
    return {
        "results": sorted((r["job_id"], r["source_uri"]) for r in results),
        "output_keys": sorted(outputs),
        "one_value_per_key": all(len(values) == 1 for values in outputs.values()),
        "ledger": sorted((r["job_id"], r["amount_usd_micros"]) for r in ledger_rows),
    }


def expected_state(jobs: list[str]) -> dict[str, object]:
    return {
        "results": sorted((j, f"file:///tmp/{j}.mp4") for j in jobs),
        "output_keys": sorted(jobs),
        "one_value_per_key": True,
        "ledger": sorted((j, COST_USD_MICROS) for j in jobs),
    }


def test_run_without_faults_reaches_the_expected_state(
    echo_pipeline: EchoPipeline, db_pool: Pool
) -> None:
    jobs = new_job_ids(JOBS)
    for job_id in jobs:
        echo_pipeline.submit(job_id)
    echo_pipeline.start_worker("clean")
    echo_pipeline.wait_finished(jobs)
    assert end_state(echo_pipeline, jobs, db_pool) == expected_state(jobs)


@pytest.mark.parametrize("failpoint", [f.value for f in Failpoint])
def test_worker_killed_at_each_step_and_restarted_leaves_the_same_end_state(
    echo_pipeline: EchoPipeline, db_pool: Pool, failpoint: str
) -> None:
    jobs = new_job_ids(JOBS)
    for job_id in jobs:
        echo_pipeline.submit(job_id)
    doomed = echo_pipeline.start_worker("doomed", VI_FAILPOINTS=failpoint)
    assert doomed.process.wait(60) == -9, "the failpoint should have killed the worker"
    echo_pipeline.start_worker("restarted")
    statuses = echo_pipeline.wait_finished(jobs, timeout=120)
    assert set(statuses.values()) == {"succeeded"}
    assert end_state(echo_pipeline, jobs, db_pool) == expected_state(jobs)
