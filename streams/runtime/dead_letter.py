"""Dead letters: the original key and bytes, why they failed, and where they came from.

The same facts travel twice: as a DeadLetter Avro value (for tools that read the
topic through the registry) and as plain headers (for anyone who only has a console
consumer), so an operator can always see why a message was parked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from streams.runtime.origin import Origin

HEADER_PREFIX = "vi-"
HEADER_NAMES = (
    "reason",
    "exception-type",
    "exception-message",
    "attempts",
    "original-topic",
    "original-partition",
    "original-offset",
    "original-timestamp",
    "stage",
    "job-id",
    "customer-id",
    "run-key",
)


@dataclass(frozen=True)
class Failure:
    """Why a message is dead-lettered."""

    reason: str
    exception_type: str
    exception_message: str
    attempts: int


def dead_letter_value(
    stage: str, job_id: str | None, origin: Origin, message: Message, failure: Failure
) -> dict[str, Any]:
    """The DeadLetter record for ``message``."""
    return {
        "stage": stage,
        "job_id": job_id,
        "reason": failure.reason,
        "exception_type": failure.exception_type,
        "exception_message": failure.exception_message[:4000],
        "attempts": failure.attempts,
        "original_topic": origin.topic,
        "original_partition": origin.partition,
        "original_offset": origin.offset,
        "original_timestamp_ms": origin.timestamp_ms,
        "original_key": _as_bytes(message.key()),
        "original_value": message.value(),
        "dead_lettered_at_ms": int(time.time() * 1000),
    }


def without_original_value(value: Mapping[str, Any], size: int) -> dict[str, Any]:
    """The record without the original bytes, for a dead letter too large for the broker.

    The original stays where it was (topic, partition and offset are in the record) until
    the topic's retention removes it; the message says so.
    """
    note = (
        f" [original value of {size} bytes not copied: too large for a dead letter; read it at"
        f" {value['original_topic']}/{value['original_partition']}/{value['original_offset']}]"
    )
    return {
        **value,
        "original_value": None,
        "exception_message": value["exception_message"][: 4000 - len(note)] + note,
    }


def dead_letter_headers(
    value: Mapping[str, Any], run_key: str, customer_id: str | None
) -> list[tuple[str, str | bytes | None]]:
    """The record's facts as ``vi-*`` headers, with the stage-run key a replay reopens."""
    facts = {
        "reason": value["reason"],
        "exception-type": value["exception_type"],
        "exception-message": value["exception_message"],
        "attempts": value["attempts"],
        "original-topic": value["original_topic"],
        "original-partition": value["original_partition"],
        "original-offset": value["original_offset"],
        "original-timestamp": value["original_timestamp_ms"],
        "stage": value["stage"],
        "job-id": value["job_id"] or "",
        "customer-id": customer_id or "",
        "run-key": run_key,
    }
    return [(HEADER_PREFIX + name, str(facts[name]).encode()) for name in HEADER_NAMES]


def _as_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


Headers = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]]


def header_map(headers: Headers | None) -> dict[str, str]:
    """Headers of a consumed message as a dict of strings (later duplicates win)."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {
        name: value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
        for name, value in pairs
    }
