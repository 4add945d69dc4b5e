"""The Kafka clients of a stage worker, configured for the stage contract."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from telemetry.logs import LIBRDKAFKA_LOGGER
from vidinsight.settings import Settings


def consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """KIP-848 group protocol (incremental, broker-assigned), manual offset handling.

    Offsets are committed explicitly after delivery, never auto-committed or
    auto-stored; ``max.poll.interval.ms`` stays small because the loop keeps polling
    while handlers run, so only a truly hung worker is evicted.
    """
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "group.protocol": "consumer",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "client.id": f"vidinsight-{group_id}",
        "logger": LIBRDKAFKA_LOGGER,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    """Idempotent producer with ``acks=all``: librdkafka's retries never duplicate."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        "compression.type": "lz4",
        "message.max.bytes": settings.max_message_bytes + 64 * 1024,
        "client.id": "vidinsight-producer",
        "logger": LIBRDKAFKA_LOGGER,
    }


def make_consumer(settings: Settings, group_id: str) -> Consumer:
    return Consumer(consumer_config(settings, group_id))


def make_producer(settings: Settings) -> Producer:
    return Producer(producer_config(settings))
