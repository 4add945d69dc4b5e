"""Reading a stage's dead-letter topic and re-driving its messages (``vidinsight dlq``).

A dead letter keeps the original key and bytes, so a replay produces exactly the
message that failed back to the topic it came from, once its cause is fixed. The
replay first reopens the stage run (fresh attempt count) and the job, so the stage
runs the handler again instead of short-circuiting to the old failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from schemas.codec import Codec
from sinks import audit, jobs, stage_runs
from sinks.db import Pool, transaction
from streams.runtime.clients import make_producer
from streams.runtime.dead_letter import header_map
from streams.runtime.delivery import Producers, default_backoff, deliver
from streams.runtime.encoded import Encoded
from streams.runtime.fence import Fence
from streams.runtime.origin import origin_of
from vidinsight.errors import PermanentError, Reason, TransientError
from vidinsight.settings import Settings


@dataclass(frozen=True)
class DeadLetterRecord:
    """One message of a DLQ topic, decoded."""

    partition: int
    offset: int
    value: dict[str, Any]
    headers: dict[str, str]

    @property
    def customer_id(self) -> str | None:
        return self.headers.get("vi-customer-id") or None

    @property
    def run_key(self) -> str:
        """The stage-run key the dead letter was recorded under (a stage may derive it from
        the value, as notify does: job and status); older letters carry only the key."""
        if self.headers.get("vi-run-key"):
            return self.headers["vi-run-key"]
        key = self.value.get("original_key")
        if key:
            return bytes(key).decode(errors="replace")
        return (
            f"{self.value['original_topic']}/{self.value['original_partition']}/"
            f"{self.value['original_offset']}"
        )


def read(
    settings: Settings, codec: Codec, topic: str, timeout_s: float = 10.0
) -> Iterator[DeadLetterRecord]:
    """Every record of ``topic`` from the beginning to its current end, without a group commit."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"vidinsight-dlq-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = _assign_all(consumer, topic, timeout_s)
        while ends:
            message = consumer.poll(timeout_s)
            if message is None:
                raise TransientError(
                    Reason.BROKER_UNAVAILABLE, f"{topic}: no data within {timeout_s} s"
                )
            if message.error() is not None:
                continue
            origin = origin_of(message)
            partition, offset = origin.partition, origin.offset
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            yield DeadLetterRecord(
                partition=partition,
                offset=offset,
                value=codec.decode(topic, message.value()),
                headers=header_map(message.headers()),
            )
    finally:
        consumer.close()


def _assign_all(consumer: Consumer, topic: str, timeout_s: float) -> dict[int, int]:
    """Assign every non-empty partition from its start; return each one's end offset."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = metadata.topics[topic].partitions
        ends: dict[int, int] = {}
        assignment = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
    except KafkaException as exc:
        raise TransientError(Reason.BROKER_UNAVAILABLE, f"{topic}: {exc}") from exc
    consumer.assign(assignment)
    return ends


def matches(record: DeadLetterRecord, reason: str | None, job_id: str | None) -> bool:
    """The filter of ``dlq list`` and ``dlq replay``."""
    if reason is not None and record.value.get("reason") != reason:
        return False
    return job_id is None or record.value.get("job_id") == job_id


def replay(
    settings: Settings,
    pool: Pool,
    stage: str,
    records: list[DeadLetterRecord],
    producer: Producer | None = None,
) -> int:
    """Re-drive ``records`` to their original topics; return how many were sent."""
    for record in records:
        with transaction(pool) as conn:
            stage_runs.reopen(conn, stage, record.customer_id, record.run_key)
            job_id = record.value.get("job_id")
            if job_id:
                jobs.reopen_job(conn, job_id, stage)
                audit.append(
                    conn,
                    [
                        audit.AuditEntry(
                            job_id=job_id,
                            stage=stage,
                            event="dead_letter_replayed",
                            reason=record.value.get("reason"),
                            detail={"dlq_partition": record.partition, "dlq_offset": record.offset},
                        )
                    ],
                )
    producers = Producers(lambda: producer or make_producer(settings))
    refused = deliver(
        producers,
        [
            Encoded(
                topic=record.value["original_topic"],
                key=record.value.get("original_key"),
                value=record.value.get("original_value"),
                headers=[("vi-replayed-from", f"{record.partition}:{record.offset}".encode())],
            )
            for record in records
        ],
        Fence(),
        default_backoff,
    )
    if refused:
        raise PermanentError(
            Reason.UNDELIVERABLE_MESSAGE,
            f"the broker refused {len(refused)} replayed message(s): {refused[0].error}",
        )
    return len(records)
