#!/usr/bin/env python3
"""An upstream system's side of vidinsight: produce a JobRequested, consume its JobCompleted.

Standalone on purpose: it imports confluent-kafka and the standard library only, as a
customer's engineer would write it, and speaks the platform's contract (docs/integration.md):

- JobRequested goes to ``vi.jobs.requested``, keyed by job_id, its value Avro in the
  Confluent wire format (magic byte, schema id, body) under the subject
  ``vi.jobs.requested-value`` (TopicNameStrategy);
- the outcome arrives on ``vi.jobs.completed``, keyed by job_id, as a JobCompleted:
  ``completed`` with an insights_uri, or ``failed`` with a reason code.

Delivery is at least once both ways: a JobRequested produced twice with the same
job_id is processed once, and a JobCompleted may be read twice, so act on job_id.

    python examples/upstream_producer.py --bootstrap 127.0.0.1:9092 \\
        --registry-url http://127.0.0.1:8081/apis/ccompat/v7 \\
        --customer-id cus_... --source-uri https://media.example/talk.mp4

It prints the JobCompleted it consumed as one JSON line, and exits 0 when the job
completed, 1 when it failed or was cancelled, 2 when none arrived in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

REQUESTS_TOPIC = "vi.jobs.requested"
COMPLETIONS_TOPIC = "vi.jobs.completed"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# Start reading completions a little before the request is sent, to allow for clock skew.
CLOCK_SKEW_MS = 5_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--registry-url", required=True, help="Confluent-compatible registry URL")
    parser.add_argument("--customer-id", required=True, help="the tenant the job belongs to")
    parser.add_argument("--source-uri", required=True, help="an http(s) URL or an uploaded blob")
    parser.add_argument("--job-id", help="default: a new unique id (reuse one to retry safely)")
    parser.add_argument("--group-id", default="upstream-example", help="our consumer group")
    parser.add_argument("--schema-dir", type=Path, default=SCHEMA_DIR, help="where the .avsc are")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the end")
    return parser.parse_args(argv)


def produce_request(args: argparse.Namespace, registry: SchemaRegistryClient, job_id: str) -> None:
    """Send one JobRequested and wait until the broker has it (acks=all, idempotent)."""
    serialize = AvroSerializer(
        registry,
        (args.schema_dir / "JobRequested.avsc").read_text(),
        conf={"subject.name.strategy": topic_subject_name_strategy},
    )
    request = {
        "job_id": job_id,
        "customer_id": args.customer_id,
        "source_uri": args.source_uri,
        "webhook_url": None,
        "options": {},
        "requested_at_ms": int(time.time() * 1000),
    }
    producer = Producer(
        {"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    errors: list[str] = []
    producer.produce(
        REQUESTS_TOPIC,
        key=StringSerializer()(job_id),
        value=serialize(request, SerializationContext(REQUESTS_TOPIC, MessageField.VALUE)),
        on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
    )
    if producer.flush(30) or errors:
        raise KafkaException(f"JobRequested not delivered: {errors or 'timed out'}")
    print(f"produced JobRequested {job_id} to {REQUESTS_TOPIC}", file=sys.stderr)


def completions_consumer(args: argparse.Namespace, from_ms: int) -> Consumer:
    """Our own consumer group on vi.jobs.completed, positioned at ``from_ms`` on assignment.

    The positions are fixed before the request is sent (``start_positions``), and the
    callback assigns them. A long-running service would instead resume from its
    committed offsets (drop the on_assign callback); seeking by time is how to (re)read
    from a given point.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    positions = start_positions(consumer, from_ms)

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        c.assign([positions[p.partition] for p in partitions])

    consumer.subscribe([COMPLETIONS_TOPIC], on_assign=on_assign)
    return consumer


def start_positions(consumer: Consumer, from_ms: int) -> dict[int, TopicPartition]:
    """Each partition's first offset at or after ``from_ms``, resolved now.

    A partition with no message since then answers -1, which means "the end as of when
    fetching starts": a fast outcome produced before that would be skipped. Its high
    watermark, read now (before the request is sent), stands in instead.
    """
    topic = consumer.list_topics(COMPLETIONS_TOPIC, timeout=10).topics[COMPLETIONS_TOPIC]
    wanted = [TopicPartition(COMPLETIONS_TOPIC, p, from_ms) for p in topic.partitions]
    positions = {}
    for found in consumer.offsets_for_times(wanted, timeout=10):
        if found.offset < 0:
            _, high = consumer.get_watermark_offsets(found, timeout=10)
            found = TopicPartition(COMPLETIONS_TOPIC, found.partition, high)
        positions[found.partition] = found
    return positions


def await_completion(
    consumer: Consumer, registry: SchemaRegistryClient, job_id: str, timeout: float
) -> dict[str, Any] | None:
    """The JobCompleted of ``job_id``, or None after ``timeout`` seconds."""
    deserialize = AvroDeserializer(registry)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        if message.key() != job_id.encode():
            continue  # another job's outcome (keys are job ids)
        event = deserialize(
            message.value(), SerializationContext(COMPLETIONS_TOPIC, MessageField.VALUE)
        )
        consumer.commit(message=message, asynchronous=False)
        return dict(event)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    job_id = args.job_id or f"job-{uuid.uuid4()}"
    registry = SchemaRegistryClient({"url": args.registry_url})
    consumer = completions_consumer(args, int(time.time() * 1000) - CLOCK_SKEW_MS)
    try:
        produce_request(args, registry, job_id)
        event = await_completion(consumer, registry, job_id, args.timeout)
    finally:
        consumer.close()
    if event is None:
        print(f"no JobCompleted for {job_id} within {args.timeout} s", file=sys.stderr)
        return 2
    print(json.dumps(event))
    if event["status"] != "completed":
        print(f"job {job_id} {event['status']}: {event['reason']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
