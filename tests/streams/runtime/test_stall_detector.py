"""A partition left paused by mistake (the librdkafka pause-state bugs, #2703, #1802) is
found by the stall detector, reported, and recovered without a restart."""

from __future__ import annotations

import threading
import zlib
from typing import Any, cast

import pytest
from confluent_kafka import Consumer

from streams.runtime import metrics
from streams.runtime.runner import build_worker
from streams.runtime.worker import StageWorker
from tests.fixtures.workers import EchoPipeline, new_job_ids
from tests.streams.runtime import echo_stage

PARTITIONS = 3  # of the echo pipeline's input topic


class ForgetfulConsumer:
    """A consumer that drops the next ``resume`` call, as librdkafka has been seen to."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self.swallow = 0

    def resume(self, partitions: Any) -> None:
        if self.swallow:
            self.swallow -= 1
            return
        self._consumer.resume(partitions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def _partition(job_id: str) -> int:
    """librdkafka's default partitioner for a keyed message: CRC32 of the key."""
    return zlib.crc32(job_id.encode()) % PARTITIONS


def _echo_worker(
    echo_pipeline: EchoPipeline, monkeypatch: pytest.MonkeyPatch, budget: float, interval: float
) -> StageWorker:
    """An echo worker in this process (so a test can reach its consumer and metrics) with
    a stall budget and check interval of the test's own."""
    for name, value in echo_pipeline.env.items():
        if name.startswith("ECHO_"):
            monkeypatch.setenv(name, value)
    settings = echo_pipeline.settings.model_copy(
        update={"stall_budget_seconds": budget, "stall_check_interval_seconds": interval}
    )
    return build_worker(echo_stage.from_env(), settings)


def test_a_partition_left_paused_is_reported_and_recovered(
    echo_pipeline: EchoPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _echo_worker(echo_pipeline, monkeypatch, budget=3.0, interval=0.5)
    forgetful = ForgetfulConsumer(worker.consumer)
    worker.consumer = cast(Consumer, forgetful)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        stalls_before = metrics.STALLS.labels("echo")._value.get()
        forgetful.swallow = 1
        [first] = new_job_ids(1)
        echo_pipeline.submit(first)
        echo_pipeline.wait_finished([first], timeout=30)  # its partition is now stuck paused
        stuck = [j for j in new_job_ids(40) if _partition(j) == _partition(first)][:4]
        for job_id in stuck:
            echo_pipeline.submit(job_id)
        statuses = echo_pipeline.wait_finished(stuck, timeout=30)
        assert set(statuses.values()) == {"succeeded"}
        assert metrics.STALLS.labels("echo")._value.get() > stalls_before
    finally:
        worker.stop()
        runner.join(30)
    assert not runner.is_alive()


def test_a_handler_longer_than_the_budget_is_no_stall(
    echo_pipeline: EchoPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time in a handler never counts: only lag with nothing in hand and nothing arriving
    is a stall, so a budget far shorter than a long job raises no false alarm."""
    worker = _echo_worker(echo_pipeline, monkeypatch, budget=1.0, interval=0.2)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        stalls_before = metrics.STALLS.labels("echo")._value.get()
        [slow] = new_job_ids(1)
        behind = [j for j in new_job_ids(40) if _partition(j) == _partition(slow)][:2]
        echo_pipeline.submit(slow, sleep_seconds="4")
        for job_id in behind:
            echo_pipeline.submit(job_id)
        statuses = echo_pipeline.wait_finished([slow, *behind], timeout=30)
        assert set(statuses.values()) == {"succeeded"}
        assert metrics.STALLS.labels("echo")._value.get() == stalls_before
    finally:
        worker.stop()
        runner.join(30)
    assert not runner.is_alive()
