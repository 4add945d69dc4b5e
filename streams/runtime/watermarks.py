"""High watermarks of the partitions a worker owns, kept fresh by a thread of their own.

The stall detector and the lag gauge need each partition's end offset as the broker
sees it, not from the fetch cache: a partition stuck paused is not fetched, so its
cached high watermark would hide exactly the lag they look for. Asking the broker takes
a round trip per partition; done on the consumer loop, it held every message behind it
(bench.runtime's p99 latency). A separate consumer asks instead: it names the stage's
group (to read where the group stands on a partition newly assigned) but never
subscribes, so it never joins it.
"""

from __future__ import annotations

import threading
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from telemetry.logs import LIBRDKAFKA_LOGGER
from vidinsight.settings import Settings

Key = tuple[str, int]
QUERY_TIMEOUT_SECONDS = 2.0


class Watermarks:
    """The latest known high watermark of each watched partition."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self._interval = settings.stall_check_interval_seconds
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": group_id,  # read, never joined: this consumer never subscribes
                "enable.auto.commit": False,
                "client.id": f"vidinsight-watermarks-{uuid.uuid4().hex[:8]}",
                "logger": LIBRDKAFKA_LOGGER,
            }
        )
        self._lock = threading.Lock()
        self._watched: set[Key] = set()
        self._highs: dict[Key, int] = {}
        self._starts: dict[Key, int] = {}  # the group's committed offset when first watched
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watermarks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(QUERY_TIMEOUT_SECONDS * 2)
        self._consumer.close()

    def watch(self, keys: set[Key]) -> None:
        """From now on, these partitions (the ones the worker owns)."""
        with self._lock:
            self._watched = set(keys)
            self._highs = {k: v for k, v in self._highs.items() if k in keys}
            self._starts = {k: v for k, v in self._starts.items() if k in keys}

    def high(self, key: Key) -> int | None:
        with self._lock:
            return self._highs.get(key)

    def start_offset(self, key: Key) -> int | None:
        """Where the group stood on the partition when it was first watched."""
        with self._lock:
            return self._starts.get(key)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            with self._lock:
                keys = sorted(self._watched)
            for key in keys:
                try:
                    self._refresh(key)
                except KafkaException:
                    continue  # the broker is away: the lag is simply not refreshed

    def _refresh(self, key: Key) -> None:
        tp = TopicPartition(*key)
        low, high = self._consumer.get_watermark_offsets(tp, timeout=QUERY_TIMEOUT_SECONDS)
        start = None
        if self.start_offset(key) is None:
            committed = self._consumer.committed([tp], timeout=QUERY_TIMEOUT_SECONDS)[0].offset
            start = committed if committed >= 0 else low
        with self._lock:
            if key in self._watched:
                self._highs[key] = high
                if start is not None:
                    self._starts[key] = start
