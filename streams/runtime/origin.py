"""Where a consumed message came from, with the None-able accessors of the client resolved once."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


def origin_of(message: Message) -> Origin:
    """The coordinates of a message returned by a consumer (never an error event)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("not a consumed message: it has no topic, partition or offset")
    return Origin(topic, partition, offset, message.timestamp()[1])
