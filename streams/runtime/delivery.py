"""Produce a batch's messages and wait until the broker has acknowledged every one.

The producer is idempotent with ``acks=all``, so librdkafka's own retries never
duplicate; only a message whose delivery finally failed is produced again. While
the broker is down the wait simply goes on (the partition stays paused), until it
comes back or the partition is taken away.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message, Producer

from streams.runtime.encoded import Encoded
from streams.runtime.fence import Fence


class _Acks:
    """Delivery reports for one batch, which may be served by any thread's flush."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self.pending = expected
        self.failed: list[int] = []

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            with self._lock:
                self.pending -= 1
                if err is not None:
                    self.failed.append(index)

        return on_delivery


def _produce(
    producer: Producer, message: Encoded, on_delivery: Callable[[KafkaError | None, Message], None]
) -> None:
    while True:
        try:
            producer.produce(
                message.topic,
                value=message.value,
                key=message.key,
                headers=message.headers or None,
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            producer.poll(0.05)  # local queue full: serve reports to make room


def deliver(
    producer: Producer,
    messages: Sequence[Encoded],
    fence: Fence,
    wait_step_seconds: float = 1.0,
    on_retry: Callable[[], None] | None = None,
) -> None:
    """Produce ``messages`` in order and return once each is acknowledged."""
    todo = list(messages)
    while todo:
        acks = _Acks(len(todo))
        for index, message in enumerate(todo):
            _produce(producer, message, acks.callback(index))
        while acks.pending > 0:
            producer.flush(wait_step_seconds)
            fence.check()
        todo = [todo[i] for i in sorted(acks.failed)]
        if todo and on_retry is not None:
            on_retry()
