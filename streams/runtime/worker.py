"""The consumer loop of one stage worker process.

The main thread only polls, dispatches and commits; each partition's batch runs in a
worker thread while that partition is paused, so polling (liveness) never waits for a
handler and ``max.poll.interval.ms`` can stay small. Each partition has at most one
batch in flight, which keeps per-key order. The paused set is ours, re-applied after
every assignment, because librdkafka's own pause state does not survive rebalances
reliably (librdkafka#2703, #1802).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.runtime import metrics
from streams.runtime.backoff import backoff_seconds
from streams.runtime.batch import BatchProcessor, Unhealthy
from streams.runtime.delivery import Producers
from streams.runtime.failpoints import Failpoint
from streams.runtime.fence import Abandoned, Fence
from streams.runtime.stage import Stage
from streams.runtime.watermarks import Watermarks
from vidinsight.errors import Reason
from vidinsight.settings import Settings

log = logging.getLogger("vidinsight.runtime")

Key = tuple[str, int]
# While a batch runs, the offsets of its finished messages are committed this often, so
# one slow message does not hold back the commits of the ones before it.
PROGRESS_COMMIT_INTERVAL_SECONDS = 1.0


@dataclass
class PartitionState:
    """What this worker knows about one partition it owns."""

    key: Key
    fence: Fence = field(default_factory=Fence)
    pending: list[Message] = field(default_factory=list)
    batch: list[Message] = field(default_factory=list)
    future: Future[int] | None = None
    commit_due: int | None = None
    committed: int | None = None
    # The offset after the last message of the running batch whose effects are delivered
    # (written by the batch's thread, read here).
    progress: int | None = None
    next_progress_commit: float = 0.0
    last_progress: float = field(default_factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.key[0], self.key[1])

    @property
    def busy(self) -> bool:
        return self.future is not None


class StageWorker:
    """Runs one stage: consume, hand batches to threads, commit what is delivered."""

    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        processor: BatchProcessor,
        consumer: Consumer,
        producers: Producers,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.processor = processor
        self.consumer = consumer
        self.producers = producers
        self.partitions: dict[Key, PartitionState] = {}
        self.executor = ThreadPoolExecutor(
            max_workers=stage.threads(settings), thread_name_prefix=f"{stage.name}-handler"
        )
        self._stopping = threading.Event()
        self._unhealthy = False
        self.watermarks = Watermarks(settings, stage.consumer_group)
        self._next_watch = 0.0
        self._labels = {"stage": stage.name}
        metrics.initialise(stage.name)

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to shut down gracefully (safe from a signal handler)."""
        self._stopping.set()

    def run(self) -> int:
        """Consume until ``stop()``; then finish or abandon in-flight work and leave the group.

        Returns the process's exit code: 0, or ``unhealthy_exit_code`` when a handler would
        not give up after its deadline (its thread cannot be killed; a restart frees it).
        """
        self.consumer.subscribe(
            [self.stage.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker started", extra={**self._labels, "topic": self.stage.input_topic})
        self.watermarks.start()
        try:
            while not self._stopping.is_set():
                self._poll()
                self._reap()
                self._dispatch()
                self._commit_due()
                self._watch()
        finally:
            self._shutdown()
            self.watermarks.stop()
        return self.settings.unhealthy_exit_code if self._unhealthy else 0

    # -- the loop ------------------------------------------------------------------

    def _poll(self) -> None:
        busy = any(state.busy for state in self.partitions.values())
        first = self.consumer.poll(0.005 if busy else 0.1)
        if first is None:
            return
        messages = [first, *self.consumer.consume(self.settings.batch_max_messages - 1, 0)]
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error, extra=self._labels)
                continue
            state = self.partitions.get(_key_of(message))
            if state is not None:  # a message of a partition revoked meanwhile is not ours
                state.pending.append(message)

    def _dispatch(self) -> None:
        if self._stopping.is_set():
            return  # what is pending stays uncommitted for the next owner
        now = time.monotonic()
        for state in self.partitions.values():
            if state.busy or not state.pending or now < state.retry_at:
                continue
            size = self.settings.batch_max_messages
            state.batch, state.pending = state.pending[:size], state.pending[size:]
            self.consumer.pause([state.tp])
            state.progress = None
            state.future = self.executor.submit(
                self.processor.run, state.batch, state.fence, partial(_record_progress, state)
            )
            metrics.IN_FLIGHT.labels(**self._labels).inc(len(state.batch))

    def _reap(self) -> None:
        now = time.monotonic()
        for state in self.partitions.values():
            if state.future is None:
                continue
            if not state.future.done():
                if now >= state.next_progress_commit:
                    state.next_progress_commit = now + PROGRESS_COMMIT_INTERVAL_SECONDS
                    self._progress_due(state)
                continue
            self._settle(state, state.future)
            if not state.busy and not state.pending:
                self.consumer.resume([state.tp])

    def _settle(self, state: PartitionState, future: Future[int]) -> None:
        """Take a finished batch's outcome: an offset to commit, or the batch back to retry."""
        metrics.IN_FLIGHT.labels(**self._labels).dec(len(state.batch))
        state.future = None
        error = future.exception()
        if error is None:
            state.commit_due = future.result()
            state.failures = 0
            state.batch = []
            return
        self._progress_due(state)
        if isinstance(error, Abandoned):
            return
        if isinstance(error, Unhealthy):
            log.error(
                "a handler would not give up; stopping so the supervisor restarts this worker",
                extra={**self._labels, "reason": Reason.STAGE_TIMEOUT},
            )
            self._unhealthy = True
            self.stop()
            return
        # The runtime itself failed (not a handler: those are classified in the batch).
        # Put the unfinished messages back and try again later.
        state.failures += 1
        done = state.progress or 0
        state.pending = [m for m in state.batch if (m.offset() or 0) >= done] + state.pending
        state.batch = []
        state.retry_at = time.monotonic() + backoff_seconds(
            state.failures,
            self.settings.transient_backoff_initial_seconds,
            self.settings.transient_backoff_max_seconds,
        )
        log.error(
            "batch failed in the runtime; retrying",
            exc_info=error,
            extra={**self._labels, "partition": state.key[1], "reason": Reason.UNEXPECTED_ERROR},
        )

    def _progress_due(self, state: PartitionState) -> None:
        """Make the running batch's finished messages due for commit."""
        progress = state.progress
        if progress is not None and progress != state.committed:
            state.commit_due = progress

    def _commit_due(self, states: list[PartitionState] | None = None) -> None:
        due = [s for s in (states or self.partitions.values()) if s.commit_due is not None]
        if not due:
            return
        self.processor.failpoints.hit(Failpoint.BEFORE_COMMIT)
        offsets = [TopicPartition(s.key[0], s.key[1], s.commit_due or 0) for s in due]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Left due: retried on the next turn; a redelivery meanwhile short-circuits.
            log.warning(
                "commit failed: %s",
                exc,
                extra={**self._labels, "reason": Reason.BROKER_UNAVAILABLE},
            )
            return
        now = time.monotonic()
        for state in due:
            state.committed, state.commit_due, state.last_progress = state.commit_due, None, now
        metrics.LAST_COMMIT.labels(**self._labels).set(time.time())

    # -- rebalancing ---------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions[(tp.topic, tp.partition)] = PartitionState(key=(tp.topic, tp.partition))
        consumer.incremental_assign(partitions)
        busy = [s.tp for s in self.partitions.values() if s.busy]
        if busy:
            consumer.pause(busy)
        if partitions:
            metrics.REBALANCES.labels(self.stage.name, "assigned").inc(len(partitions))
            log.info("partitions assigned: %s", _names(partitions), extra=self._labels)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish (within a grace period) or abandon in-flight work, commit, then let go."""
        deadline = time.monotonic() + self.settings.revoke_grace_seconds
        leaving = [s for tp in partitions if (s := self.partitions.get((tp.topic, tp.partition)))]
        for state in leaving:
            if state.future is not None:
                future = state.future
                try:
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    state.fence.raise_fence()
                except Exception:
                    pass
                if future.done():
                    self._settle(state, future)
                else:
                    metrics.IN_FLIGHT.labels(**self._labels).dec(len(state.batch))
                    self._progress_due(state)
            state.fence.raise_fence()
        self._commit_due(leaving)
        for state in leaving:
            del self.partitions[state.key]
            metrics.forget_partition(self.stage.name, *state.key)
        consumer.incremental_unassign(partitions)
        if partitions:
            metrics.REBALANCES.labels(self.stage.name, "revoked").inc(len(partitions))
            log.info("partitions revoked: %s", _names(partitions), extra=self._labels)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost partitions may already belong to another worker: no commit, fence at once."""
        for tp in partitions:
            state = self.partitions.pop((tp.topic, tp.partition), None)
            metrics.forget_partition(self.stage.name, tp.topic, tp.partition)
            if state is not None:
                state.fence.raise_fence()
                if state.busy:
                    metrics.IN_FLIGHT.labels(**self._labels).dec(len(state.batch))
        consumer.incremental_unassign(partitions)
        metrics.REBALANCES.labels(self.stage.name, "lost").inc(len(partitions))
        log.warning("partitions lost: %s", _names(partitions), extra=self._labels)

    # -- watching ------------------------------------------------------------------

    def _watch(self) -> None:
        """Publish lag per partition and recover partitions that stalled silently."""
        now = time.monotonic()
        if now < self._next_watch:
            return
        self._next_watch = now + self.settings.stall_check_interval_seconds
        self.watermarks.watch(set(self.partitions))
        for state in list(self.partitions.values()):
            lag = self._lag(state)
            if lag is None:
                continue
            metrics.CONSUMER_LAG.labels(self.stage.name, state.key[0], str(state.key[1])).set(lag)
            if lag == 0 or state.busy or state.pending:
                # Nothing to do, or work in hand (a long handler is the deadline's business):
                # a stall is lag that no message of ours is arriving for.
                state.last_progress = now
            elif now - state.last_progress > self.settings.stall_budget_seconds:
                self._recover_stall(state, lag, now)

    def _lag(self, state: PartitionState) -> int | None:
        """High watermark minus committed offset, from what ``Watermarks`` last learnt."""
        if state.committed is None:
            state.committed = self.watermarks.start_offset(state.key)
        high = self.watermarks.high(state.key)
        if high is None or high < 0 or state.committed is None:
            return None
        return max(0, high - state.committed)

    def _recover_stall(self, state: PartitionState, lag: int, now: float) -> None:
        metrics.STALLS.labels(**self._labels).inc()
        log.warning(
            "partition stalled: lag %d, no commit for %.0f s",
            lag,
            now - state.last_progress,
            extra={**self._labels, "partition": state.key[1], "reason": Reason.PARTITION_STALLED},
        )
        state.last_progress = now
        if state.committed is None:
            return
        self.consumer.seek(TopicPartition(state.key[0], state.key[1], state.committed))
        self.consumer.resume([state.tp])

    # -- shutdown ------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop fetching, give in-flight work the grace period, commit, leave, close."""
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        log.info("worker stopping", extra=self._labels)
        try:
            self.consumer.pause(self.consumer.assignment())
            while any(s.busy for s in self.partitions.values()) and time.monotonic() < deadline:
                self.consumer.poll(0.05)
                for state in self.partitions.values():
                    if state.future is not None and state.future.done():
                        self._settle(state, state.future)
            for state in self.partitions.values():
                state.fence.raise_fence()
                self._progress_due(state)
            self._commit_due()
        except KafkaException as exc:
            log.warning("shutdown: %s", exc, extra=self._labels)
        self.executor.shutdown(wait=False, cancel_futures=True)
        _close_within(self.consumer, self.settings.consumer_close_timeout_seconds)
        self.producers.current.flush(self.settings.consumer_close_timeout_seconds)
        log.info("worker stopped", extra=self._labels)


def _close_within(consumer: Consumer, timeout: float) -> None:
    """``close()`` (leave the group) with a bound: it is known to hang (confluent-kafka#1667)."""
    closer = threading.Thread(target=consumer.close, name="consumer-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        log.warning("consumer close did not finish in %.0f s; exiting anyway", timeout)


def _record_progress(state: PartitionState, next_offset: int) -> None:
    """Called by the batch's thread as each message's effects are delivered."""
    state.progress = next_offset


def _key_of(message: Message) -> Key:
    return (message.topic() or "", message.partition() or 0)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
