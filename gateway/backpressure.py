"""Global backpressure: how far behind the pipeline's first stage is.

When the ingest consumer group lags more than a configured number of messages behind
``vi.jobs.requested``, new submissions are refused with 503 and ``Retry-After`` so a
burst is shed at the door instead of stalling the queue. The lag is read with the
Kafka AdminClient by a background thread every few seconds, so a burst of requests
costs the broker one query, not one per request, and no request ever waits for one
(a request that had to refresh the figure held up every request behind its lock).

The group's committed offsets are read by ``topics.admin.offsets_reader``, a consumer
that never joins the group (the AdminClient's call for them can crash the process).
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from topics.admin import offsets_reader
from vidinsight.settings import Settings

log = logging.getLogger(__name__)
# librdkafka's "no committed offset" marker.
OFFSET_INVALID = -1001


class LagMonitor:
    """The consumer lag of one group on one topic, refreshed in the background."""

    def __init__(self, settings: Settings, admin: AdminClient, group: str, topic: str) -> None:
        self._admin = admin
        self._group = group
        self._topic = topic
        self._ttl = settings.gateway_lag_cache_seconds
        self._timeout = min(settings.admin_timeout_seconds, 5.0)
        self._lock = threading.Lock()
        self._offsets_reader = offsets_reader(
            settings.kafka_bootstrap, group, "vidinsight-gateway-lag"
        )
        # Measured by the background thread alone, the first time at once: start-up never
        # waits for the broker (the outbox takes jobs while it is down), and a gateway
        # that starts into a backlog sheds from the first answer after that measurement.
        self._value: int | None = None
        self._stopped = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name="lag-monitor", daemon=True)
        self._refresher.start()

    def lag(self) -> int | None:
        """Messages the group has not yet consumed; None while the broker does not answer
        (work is never refused for want of a figure)."""
        return self._value

    def _refresh(self) -> None:
        wait = 0.0
        while not self._stopped.wait(wait):
            with self._lock:
                if self._stopped.is_set():
                    return
                self._value = self._measure()
            wait = self._ttl

    def _measure(self) -> int | None:
        try:
            return self._lag_now()
        except Exception as exc:  # never refuse work because the lag could not be read
            log.warning("consumer lag unavailable", extra={"detail": str(exc)})
            return None

    def _lag_now(self) -> int:
        metadata = self._admin.list_topics(self._topic, timeout=self._timeout)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None:
            return 0
        partitions = [TopicPartition(self._topic, p) for p in topic.partitions]
        latest = self._offsets(partitions, OffsetSpec.latest())
        earliest = self._offsets(partitions, OffsetSpec.earliest())
        committed = self._committed(partitions)
        total = 0
        for p, end in latest.items():
            position = committed.get(p, OFFSET_INVALID)
            start = position if position >= 0 else earliest.get(p, 0)
            total += max(0, end - start)
        return total

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[int, int]:
        futures = self._admin.list_offsets(
            {tp: spec for tp in partitions}, request_timeout=self._timeout
        )
        return {tp.partition: f.result(self._timeout).offset for tp, f in futures.items()}

    def _committed(self, partitions: list[TopicPartition]) -> dict[int, int]:
        committed = self._offsets_reader.committed(partitions, timeout=self._timeout)
        return {tp.partition: tp.offset for tp in committed}

    def close(self) -> None:
        """Stop refreshing and let go of the offsets reader (it never joined the group, so
        nothing rebalances)."""
        self._stopped.set()
        with self._lock:
            self._offsets_reader.close()
        self._refresher.join(self._timeout * 4)
