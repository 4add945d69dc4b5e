"""Consumer-group lag and progress of the platform's consumers, sampled in the background.

Every ``interval_seconds`` the monitor reads, for each watched group, the high
watermarks of its input topic's partitions and the group's committed offsets, and
keeps per group: the time series (t, lag, committed sum), the peak lag, the longest
stall (lag above 0 while the committed sum does not move) and when the lag drained
after a given time. Lag is the sum over partitions of high - committed, counted from
the low watermark where the group has committed nothing. Times are ``time.monotonic()``
(the fault injector's clock); reports give them as seconds after a start.

A sample the broker does not answer (restarting, unreachable), or of a topic that does
not exist yet, is a gap: it is kept in the series as (t, None, None), it is not
progress, and an open stall stays open across it. Committed offsets are read by a
consumer that carries the group's id but never joins (``topics.admin.offsets_reader``),
not by the AdminClient, whose ListConsumerGroupOffsets crashes the process while a
restarted broker's offsets coordinator is still loading.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.costs.events import costs_topic
from streams.stages import STAGE_REFS, stage_named
from topics.admin import admin_client, offsets_reader
from vidinsight.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One reading of a group; lag and committed are None for a gap."""

    t: float
    lag: int | None
    committed: int | None


@dataclass(frozen=True)
class Stall:
    """A span during which the group lagged and committed nothing."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class GroupSeries:
    """Everything sampled for one group, and what follows from it."""

    topic: str
    samples: list[Sample] = field(default_factory=list)
    peak_lag: int = 0
    longest_stall: Stall | None = None
    _open_stall: Stall | None = None
    _last_committed: int | None = None

    def add(self, sample: Sample) -> None:
        """Record ``sample`` and update the peak and the stalls it extends or ends."""
        self.samples.append(sample)
        if sample.lag is None or sample.committed is None:
            if self._open_stall is not None:  # a gap is not progress
                self._extend_stall(sample.t)
            return
        self.peak_lag = max(self.peak_lag, sample.lag)
        stalled = sample.lag > 0 and sample.committed == self._last_committed
        if stalled and self._open_stall is not None:
            self._extend_stall(sample.t)
        elif sample.lag > 0:  # a stall may begin here (offsets moved, or work arrived)
            self._open_stall = Stall(sample.t, sample.t)
            self._keep_if_longest(self._open_stall)
        else:
            self._open_stall = None
        self._last_committed = sample.committed

    def _extend_stall(self, t: float) -> None:
        assert self._open_stall is not None
        self._open_stall = Stall(self._open_stall.start, t)
        self._keep_if_longest(self._open_stall)

    def _keep_if_longest(self, stall: Stall) -> None:
        if self.longest_stall is None or stall.seconds >= self.longest_stall.seconds:
            self.longest_stall = stall

    @property
    def latest(self) -> Sample | None:
        """The most recent sample that is not a gap."""
        return next((s for s in reversed(self.samples) if s.lag is not None), None)

    def time_to_drain_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the first sample at or after it with lag 0; None: never."""
        return next((s.t - t for s in self.samples if s.t >= t and s.lag == 0), None)

    def series(self, since: float) -> list[tuple[float, int, int]]:
        """(seconds after ``since``, lag, committed) of every sample since then but gaps."""
        return [
            (s.t - since, s.lag, s.committed)
            for s in self.samples
            if s.t >= since and s.lag is not None and s.committed is not None
        ]

    def summary(self, origin: float) -> dict[str, Any]:
        """The figures of a report, times in seconds after ``origin``."""
        stall = self.longest_stall
        latest = self.latest
        return {
            "topic": self.topic,
            "samples": len(self.samples),
            "gaps": sum(s.lag is None for s in self.samples),
            "peak_lag": self.peak_lag,
            "lag_at_end": None if latest is None else latest.lag,
            "committed_at_end": None if latest is None else latest.committed,
            "longest_stall_seconds": 0.0 if stall is None else round(stall.seconds, 1),
            "longest_stall": None
            if stall is None
            else {"start": round(stall.start - origin, 1), "end": round(stall.end - origin, 1)},
        }


def platform_groups(settings: Settings) -> dict[str, str]:
    """Every consumer group of the platform and the topic it reads: the stages' groups
    (as their workers name them) and the cost aggregator's (its Faust app id)."""
    groups = {}
    for name in STAGE_REFS:
        stage = stage_named(name)
        groups[stage.consumer_group] = stage.input_topic
    groups[settings.costs_app_id] = costs_topic(settings)
    return groups


class LagMonitor:
    """Samples ``groups`` ({group: input topic}; the platform's when None) on the broker
    at ``bootstrap`` every ``interval_seconds``."""

    def __init__(
        self,
        bootstrap: str,
        interval_seconds: float = 1.0,
        groups: Mapping[str, str] | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        if groups is None:
            groups = platform_groups(get_settings())
        self.interval_seconds = interval_seconds
        self.request_timeout = request_timeout
        self.started = time.monotonic()
        self._admin: AdminClient = admin_client(bootstrap)
        self._readers: dict[str, Consumer] = {
            group: offsets_reader(bootstrap, group, "vidinsight-soak-lag") for group in groups
        }
        self._series = {group: GroupSeries(topic) for group, topic in groups.items()}
        self._sampled = threading.Condition()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def start(self) -> LagMonitor:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and close the readers (they never joined a group: no rebalance)."""
        self._stopped.set()
        self._thread.join()
        for reader in self._readers.values():
            reader.close()

    def summary(self) -> dict[str, Any]:
        """Per group: peak lag, lag at the end, longest stall (times in seconds after
        ``start()``); ready for a JSON report."""
        with self._sampled:
            groups = {g: series.summary(self.started) for g, series in self._series.items()}
        return {"interval_seconds": self.interval_seconds, "groups": groups}

    def series(self, since: float) -> dict[str, list[tuple[float, int, int]]]:
        """Per group: (seconds after ``since``, lag, committed sum) of each sample taken
        since then (``since`` on the ``time.monotonic()`` clock), gaps left out."""
        with self._sampled:
            return {group: s.series(since) for group, s in self._series.items()}

    def latest(self, group: str) -> Sample | None:
        """The group's most recent sample that is not a gap."""
        with self._sampled:
            return self._series[group].latest

    def longest_stall(self, group: str) -> Stall | None:
        with self._sampled:
            return self._series[group].longest_stall

    def time_to_drain_after(self, t: float) -> dict[str, float | None]:
        """Per group: seconds from ``t`` (``time.monotonic()``) until its lag was 0 again
        (None: not yet)."""
        with self._sampled:
            return {group: s.time_to_drain_after(t) for group, s in self._series.items()}

    def wait_drained(self, timeout: float) -> bool:
        """Whether, within ``timeout`` seconds, a sampling round taken after this call
        finds every group at lag 0."""
        since = time.monotonic()

        def drained() -> bool:
            latest = [series.latest for series in self._series.values()]
            return all(s is not None and s.t >= since and s.lag == 0 for s in latest)

        with self._sampled:
            return self._sampled.wait_for(drained, timeout)

    def _run(self) -> None:
        next_round = time.monotonic()
        while not self._stopped.is_set():
            self._sample_round()
            next_round += self.interval_seconds
            self._stopped.wait(max(0.0, next_round - time.monotonic()))

    def _sample_round(self) -> None:
        """One sample per group; a failure to read the topics makes a gap for all."""
        t = time.monotonic()
        topics = {series.topic for series in self._series.values()}
        try:
            watermarks = self._watermarks(topics)
        except Exception as exc:  # the broker is restarting or unreachable: a gap
            log.info("lag sample failed", extra={"detail": str(exc)})
            watermarks = None
        samples = {
            group: self._sample(t, group, series.topic, watermarks)
            for group, series in self._series.items()
        }
        with self._sampled:
            for group, sample in samples.items():
                self._series[group].add(sample)
            self._sampled.notify_all()

    def _sample(
        self,
        t: float,
        group: str,
        topic: str,
        watermarks: dict[str, dict[int, tuple[int, int]]] | None,
    ) -> Sample:
        if watermarks is None or topic not in watermarks:
            return Sample(t, None, None)
        partitions = watermarks[topic]
        try:
            committed = self._committed(group, topic, list(partitions))
        except Exception as exc:  # the group's coordinator did not answer: a gap
            log.info("committed offsets unavailable", extra={"detail": f"{group}: {exc}"})
            return Sample(t, None, None)
        lag = 0
        for partition, (low, high) in partitions.items():
            position = committed.get(partition)
            lag += max(0, high - (low if position is None else position))
        return Sample(t, lag, sum(committed.values()))

    def _watermarks(self, topics: set[str]) -> dict[str, dict[int, tuple[int, int]]]:
        """{topic: {partition: (low, high)}} for every topic that exists."""
        metadata = self._admin.list_topics(timeout=self.request_timeout)
        partitions = [
            TopicPartition(name, p)
            for name in topics
            if (topic := metadata.topics.get(name)) is not None and topic.error is None
            for p in topic.partitions
        ]
        if not partitions:
            return {}
        low = self._offsets(partitions, OffsetSpec.earliest())
        high = self._offsets(partitions, OffsetSpec.latest())
        found: dict[str, dict[int, tuple[int, int]]] = {}
        for key, end in high.items():
            found.setdefault(key[0], {})[key[1]] = (low[key], end)
        return found

    def _offsets(
        self, partitions: list[TopicPartition], spec: OffsetSpec
    ) -> dict[tuple[str, int], int]:
        futures = self._admin.list_offsets(
            {tp: spec for tp in partitions}, request_timeout=self.request_timeout
        )
        return {
            (tp.topic, tp.partition): future.result(self.request_timeout).offset
            for tp, future in futures.items()
        }

    def _committed(self, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
        """The group's committed offset of each partition that has one."""
        asked = [TopicPartition(topic, p) for p in partitions]
        answered = self._readers[group].committed(asked, timeout=self.request_timeout)
        failed = [tp.error for tp in answered if tp.error is not None]
        if failed:
            raise KafkaException(failed[0])
        return {tp.partition: tp.offset for tp in answered if tp.offset >= 0}
