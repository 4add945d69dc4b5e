"""Produce messages and wait until the broker has acknowledged every one.

The producer is idempotent with ``acks=all``, so librdkafka's own retries never
duplicate; a message whose delivery failed for a passing reason (broker down, timed
out) is produced again after a backoff, for as long as it takes (the partition stays
paused) until it lands or the partition is taken away. A message the broker will never
take (too large, invalid, not authorised) is returned to the caller instead of being
retried (judged alone first: the broker refuses the whole record batch it came in), and
a fatal producer error (the idempotent producer's state is lost) replaces
the producer, since a fatal producer refuses everything afterwards. A success report
without an offset is not taken for a delivery (``delivery_error``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.runtime.backoff import backoff_seconds
from streams.runtime.encoded import Encoded
from streams.runtime.fence import Fence
from vidinsight.errors import Reason

log = logging.getLogger("vidinsight.runtime")

UNCONFIRMED = "acknowledged without an offset: not known to be written"

# Errors of the record itself, or of our right to write it: producing again cannot help.
PERMANENT_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)


def delivery_error(err: KafkaError | None, msg: Message) -> KafkaError | None:
    """The report's error, a success without an offset counting as not delivered.

    librdkafka's idempotent producer reports the earlier messages of a partition as
    delivered when a later batch succeeds (an "implicit ack"), even when their own batch
    failed with not-leader during a leader change and the broker took the later batch
    across the gap, having no state for this producer on that partition yet. Such a
    report has no offset, while every real append has one: the soak lost a job's
    TranscriptReady this way across a broker restart. Producing again risks a
    duplicate, which every consumer absorbs (run keys, event ids); never a loss.
    """
    if err is not None or msg.offset() is not None:
        return err
    log.warning(
        "the broker acknowledged a message without an offset; not counted as delivered",
        extra={"reason": Reason.BROKER_UNAVAILABLE, "detail": f"{msg.topic()}[{msg.partition()}]"},
    )
    return KafkaError(KafkaError._INCONSISTENT, UNCONFIRMED, retriable=True)


class Producers:
    """The process's producer, replaced when it reports a fatal error."""

    def __init__(self, make: Callable[[], Producer]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.current = make()

    def replace(self, broken: Producer) -> Producer:
        """A fresh producer in place of ``broken`` (once, however many threads saw it fail)."""
        with self._lock:
            if self.current is broken:
                log.error("producer reported a fatal error; replacing it")
                self.current = self._make()
            return self.current


@dataclass(frozen=True)
class Undeliverable:
    """A message the broker refused for good, and why."""

    message: Encoded
    error: str


class _Acks:
    """Delivery reports for one round, which may be served by any thread's flush."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self.pending = expected
        self.failed: dict[int, KafkaError] = {}

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            err = delivery_error(err, msg)
            with self._lock:
                self.pending -= 1
                if err is not None:
                    self.failed[index] = err

        return on_delivery

    def refused(self, index: int, err: KafkaError) -> None:
        """``produce`` itself raised: no report will come for this message."""
        with self._lock:
            self.pending -= 1
            self.failed[index] = err


def _produce(producer: Producer, message: Encoded, acks: _Acks, index: int) -> None:
    while True:
        try:
            producer.produce(
                message.topic,
                value=message.value,
                key=message.key,
                headers=message.headers or None,
                on_delivery=acks.callback(index),
            )
            return
        except BufferError:
            producer.poll(0.05)  # local queue full: serve reports to make room
        except KafkaException as exc:
            acks.refused(index, exc.args[0])
            return


def _round(
    producer: Producer, messages: Sequence[Encoded], fence: Fence, wait_step_seconds: float
) -> dict[int, KafkaError]:
    """Produce ``messages`` once and wait for every report; the errors, by index."""
    acks = _Acks(len(messages))
    for index, message in enumerate(messages):
        _produce(producer, message, acks, index)
    while acks.pending > 0:
        producer.flush(wait_step_seconds)
        fence.check()
    return acks.failed


def _is_permanent(err: KafkaError) -> bool:
    return err.code() in PERMANENT_CODES and not err.fatal()


def deliver(
    producers: Producers,
    messages: Sequence[Encoded],
    fence: Fence,
    backoff: Callable[[int], float],
    wait_step_seconds: float = 1.0,
    on_retry: Callable[[], None] | None = None,
) -> list[Undeliverable]:
    """Produce ``messages`` in order; return once each is acknowledged or refused for good."""
    todo = list(messages)
    refused: list[Undeliverable] = []
    retry = 0
    while todo:
        producer = producers.current
        again = []
        for index, err in sorted(_round(producer, todo, fence, wait_step_seconds).items()):
            if _is_permanent(err) and len(todo) > 1:
                # The broker refuses a whole record batch for one bad record: each one is
                # judged alone before it is called undeliverable.
                alone = _round(producer, [todo[index]], fence, wait_step_seconds)
                if not alone:
                    continue
                err = alone[0]
            if _is_permanent(err):
                refused.append(Undeliverable(todo[index], err.str()))
            else:
                again.append(todo[index])
                if err.fatal():
                    producers.replace(producer)
        todo = again
        if todo:
            retry += 1
            if on_retry is not None:
                on_retry()
            fence.sleep(backoff(retry))
    return refused


def default_backoff(retry: int) -> float:
    """For callers outside a stage (replay): 0.2 s doubling to 10 s."""
    return backoff_seconds(retry, 0.2, 10.0)
