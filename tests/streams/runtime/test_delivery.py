"""A record the broker refuses for good is handed back at once, never produced again in a
loop; the records beside it are delivered. A success report without an offset is not a
delivery."""

from __future__ import annotations

import os
import time

from confluent_kafka import KafkaError, Message

from streams.runtime.clients import make_producer
from streams.runtime.delivery import (
    UNCONFIRMED,
    Producers,
    _is_permanent,
    deliver,
    delivery_error,
)
from streams.runtime.encoded import Encoded
from streams.runtime.fence import Fence
from tests.fixtures.kafka import consume_from, unique_topic
from topics.admin import ensure_topics
from topics.catalogue import TopicSpec
from vidinsight.settings import Settings

TOPIC_LIMIT_BYTES = 2_000


def test_a_record_over_the_topics_limit_is_refused_once_and_the_rest_delivered(
    settings: Settings,
) -> None:
    spec = TopicSpec(
        name=unique_topic("small-records"),
        partitions=1,
        replication_factor=1,
        value_schema="CostEvent",
        config_overrides=(("max.message.bytes", str(TOPIC_LIMIT_BYTES)),),
    )
    ensure_topics(settings.kafka_bootstrap, [spec])
    small = Encoded(spec.name, b"small", b"x" * 100)
    large = Encoded(spec.name, b"large", os.urandom(TOPIC_LIMIT_BYTES * 5))  # incompressible
    retries: list[int] = []

    def backoff(retry: int) -> float:
        retries.append(retry)
        return 0.1

    began = time.monotonic()
    refused = deliver(
        Producers(lambda: make_producer(settings)),
        [small, large, small],
        Fence(),
        backoff,
    )

    assert [r.message for r in refused] == [large]
    assert "too large" in refused[0].error.lower() or "size" in refused[0].error.lower()
    assert retries == [], "a refusal is not retried"
    assert time.monotonic() - began < 30
    delivered = consume_from(settings.kafka_bootstrap, spec.name, 3, timeout=10)
    assert [m.key() for m in delivered] == [b"small", b"small"]


def test_a_success_report_without_an_offset_counts_as_not_delivered() -> None:
    """librdkafka's "implicit ack" reports a message delivered without an offset when a
    later batch succeeded; only a report with an offset is a known append."""
    appended = Message(topic="vi.transcripts.ready", partition=1, offset=4)
    implicit = Message(topic="vi.transcripts.ready", partition=1)
    refused = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)

    assert delivery_error(None, appended) is None
    assert delivery_error(refused, implicit) is refused
    unconfirmed = delivery_error(None, implicit)
    assert unconfirmed is not None
    assert unconfirmed.str() == UNCONFIRMED
    assert not unconfirmed.fatal(), "the producer is kept"
    assert not _is_permanent(unconfirmed), "the message is produced again"
