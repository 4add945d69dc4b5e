"""One partition's batch through the stage contract, in a worker thread.

Order, as DESIGN.md fixes it: decode; short-circuit runs already finished (re-emit
their stored outputs); run the handler for the rest; one transaction for every
upsert, stage-run record and audit entry of the batch; produce outputs, cost events
and dead letters and wait for delivery. The caller commits the offset afterwards.
Transient faults are retried here with backoff for as long as it takes (the
partition stays paused meanwhile); only the fence stops the retrying.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Message, Producer

from schemas.codec import Codec
from sinks import audit, stage_runs
from sinks.db import Connection, Pool, transaction
from streams.runtime import metrics
from streams.runtime.backoff import backoff_seconds
from streams.runtime.dead_letter import Failure, dead_letter_headers, dead_letter_value
from streams.runtime.delivery import deliver
from streams.runtime.encoded import Encoded
from streams.runtime.failpoints import Failpoint, Failpoints
from streams.runtime.fence import Abandoned, Fence
from streams.runtime.origin import Origin, origin_of
from streams.runtime.stage import Inbound, Stage, StageResult
from vidinsight.errors import ErrorClass, Reason, TransientError, classify, costs_of
from vidinsight.settings import Settings

log = logging.getLogger("vidinsight.runtime")
T = TypeVar("T")

COSTS_SCHEMA = "CostEvent"
DEAD_LETTER_SCHEMA = "DeadLetter"
JOB_COMPLETED_SCHEMA = "JobCompleted"


@dataclass
class Item:
    """One message of the batch and what became of it."""

    message: Message
    origin: Origin
    run_key: str
    inbound: Inbound | None = None
    failure: Failure | None = None
    result: StageResult | None = None
    outputs: list[Encoded] = field(default_factory=list)
    replayed_from: str | None = None  # "stored" or the run key of an earlier item
    duration_ms: float = 0.0

    @property
    def job_id(self) -> str:
        return self.inbound.job_id if self.inbound else self.run_key

    @property
    def customer_id(self) -> str | None:
        return self.inbound.customer_id if self.inbound else None

    @property
    def status(self) -> str:
        return "dead_lettered" if self.failure else "succeeded"


def run_key_of(message: Message, origin: Origin) -> str:
    """The stage-run key: the message key, or its coordinates when it has none."""
    key = message.key()
    if key:
        return key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    return f"{origin.topic}/{origin.partition}/{origin.offset}"


def job_fields(item: Item) -> dict[str, Any]:
    """The log context every line about this item carries (invariant I4)."""
    return {
        "job_id": item.job_id,
        "customer_id": item.customer_id,
        "attempt": item.inbound.attempt if item.inbound else 1,
        "topic": item.origin.topic,
        "partition": item.origin.partition,
        "offset": item.origin.offset,
    }


class BatchProcessor:
    """Runs batches of one stage; shared by the worker threads of a process."""

    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        codec: Codec,
        pool: Pool,
        producer: Producer,
        on_dead_letter: Callable[[Connection, Item], None] | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.codec = codec
        self.pool = pool
        self.producer = producer
        self.on_dead_letter = on_dead_letter
        self.failpoints = Failpoints(settings.failpoints)

    # -- the contract, step by step ------------------------------------------------

    def run(self, messages: Sequence[Message], fence: Fence) -> int:
        """Process ``messages`` (one partition, in order); return the offset to commit."""
        started = time.monotonic()
        items = [self._decode(m, fence) for m in messages]
        finished, attempts = self._retrying(fence, "begin", lambda: self._begin(items))
        done: dict[str, Item] = {}
        for item in items:
            earlier = done.get(item.run_key)
            if earlier is not None:  # the same key twice in one batch: once to effect
                item.outputs, item.replayed_from = earlier.outputs, earlier.run_key
                continue
            self._execute(item, finished, attempts, fence)
            done[item.run_key] = item
        self.failpoints.hit(Failpoint.AFTER_HANDLER)
        fence.check()
        self._retrying(fence, "store", lambda: self._store(items, fence))
        self.failpoints.hit(Failpoint.AFTER_UPSERT)
        fence.check()
        deliver(
            self.producer,
            [out for item in items for out in item.outputs],
            fence,
            on_retry=lambda: metrics.RETRIES.labels(
                self.stage.name, Reason.BROKER_UNAVAILABLE
            ).inc(),
        )
        self.failpoints.hit(Failpoint.AFTER_PRODUCE)
        metrics.BATCH_SECONDS.labels(self.stage.name).observe(time.monotonic() - started)
        self._count(items)
        return items[-1].origin.offset + 1

    def _decode(self, message: Message, fence: Fence) -> Item:
        origin = origin_of(message)
        item = Item(message=message, origin=origin, run_key=run_key_of(message, origin))
        try:
            value = self._retrying(
                fence, "decode", lambda: self.codec.decode(origin.topic, message.value())
            )
        except Abandoned:
            raise
        except Exception as exc:
            item.failure = self._failure(exc, attempts=1)
            return item
        if self.stage.run_key is not None:
            item.run_key = self.stage.run_key(value)
        item.inbound = Inbound(
            key=item.run_key,
            value=value,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            timestamp_ms=origin.timestamp_ms,
            attempt=1,
        )
        return item

    def _begin(self, items: list[Item]) -> tuple[dict[str, stage_runs.FinishedRun], dict[str, int]]:
        """Find finished runs and count an attempt for the rest, committed before any handler."""
        keys = {item.run_key for item in items}
        with transaction(self.pool) as conn:
            finished = stage_runs.finished_runs(conn, self.stage.name, keys)
            starts = {
                item.run_key: stage_runs.RunStart(
                    run_key=item.run_key,
                    job_id=item.job_id,
                    customer_id=item.customer_id,
                    topic=item.origin.topic,
                    partition=item.origin.partition,
                    offset=item.origin.offset,
                )
                for item in items
                if item.inbound is not None and item.run_key not in finished
            }
            attempts = stage_runs.begin_attempts(conn, self.stage.name, list(starts.values()))
        return finished, attempts

    def _execute(
        self,
        item: Item,
        finished: dict[str, stage_runs.FinishedRun],
        attempts: dict[str, int],
        fence: Fence,
    ) -> None:
        stored = finished.get(item.run_key)
        if stored is not None:
            item.outputs = [Encoded.from_json(o) for o in stored.outputs]
            item.replayed_from = "stored"
            return
        if item.inbound is None:  # undecodable
            item.outputs = self._dead_letter(item, fence)
            return
        delivered = attempts.get(item.run_key, 1)
        item.inbound = _with_attempt(item.inbound, delivered)
        if delivered > self.settings.max_deliveries:
            item.failure = Failure(
                reason=Reason.RETRIES_EXHAUSTED,
                exception_type="RedeliveryLimit",
                exception_message=f"delivered {delivered} times without finishing",
                attempts=delivered,
            )
            item.outputs = self._dead_letter(item, fence)
            return
        self._handle(item, fence)

    def _handle(self, item: Item, fence: Fence) -> None:
        """Run the handler: transient faults forever with backoff, unknown ones a few times."""
        assert item.inbound is not None
        unknown_failures = 0
        retry = 0
        paid: dict[str, Mapping[str, Any]] = {}  # cost events of failed attempts, by id
        while True:
            started = time.monotonic()
            try:
                result = self.stage.handler(item.inbound)
                item.outputs = self._encode_outputs(result)
                emitted = {str(event["event_id"]) for event in result.cost_events}
                item.outputs += self._encode_costs(
                    [event for key, event in paid.items() if key not in emitted]
                )
                item.result = result
                item.duration_ms = (time.monotonic() - started) * 1000
                metrics.HANDLER_SECONDS.labels(self.stage.name).observe(item.duration_ms / 1000)
                return
            except Abandoned:
                raise
            except Exception as exc:
                paid.update((str(event["event_id"]), event) for event in costs_of(exc))
                error_class, reason = classify(exc)
                retry += 1
                if error_class is ErrorClass.UNKNOWN:
                    unknown_failures += 1
                if error_class is ErrorClass.PERMANENT or (
                    unknown_failures >= self.settings.unknown_error_max_attempts
                ):
                    item.failure = self._failure(exc, attempts=item.inbound.attempt)
                    item.result = None
                    item.outputs = self._dead_letter(item, fence)
                    item.outputs += self._encode_costs(list(paid.values()))
                    return
                self._note_retry(item, reason, error_class, exc)
                item.inbound = _with_attempt(item.inbound, item.inbound.attempt + 1)
                fence.sleep(self._delay(retry))

    def _encode_outputs(self, result: StageResult) -> list[Encoded]:
        encoded = [
            Encoded(o.topic, o.key.encode(), self.codec.encode(o.topic, o.schema, o.value))
            for o in result.outputs
        ]
        return encoded + self._encode_costs(result.cost_events)

    def _encode_costs(self, events: Sequence[Mapping[str, Any]]) -> list[Encoded]:
        """Cost events for the costs topic, keyed by customer (the aggregator's partitioning)."""
        return [
            Encoded(
                self.stage.costs_topic,
                str(cost["customer_id"]).encode(),
                self.codec.encode(self.stage.costs_topic, COSTS_SCHEMA, cost),
            )
            for cost in events
        ]

    def _dead_letter(self, item: Item, fence: Fence) -> list[Encoded]:
        """The dead letter, and the job's failure announcement when the job is known."""
        assert item.failure is not None
        outputs = [self._parked(item, fence)]
        topic = self.stage.failure_topic
        if topic is not None and item.inbound is not None and item.customer_id is not None:
            announcement = {
                "job_id": item.job_id,
                "customer_id": item.customer_id,
                "status": "failed",
                "reason": str(item.failure.reason),
                "insights_uri": None,
                "completed_at_ms": int(time.time() * 1000),
            }
            body = self._retrying(
                fence,
                "encode",
                lambda: self.codec.encode(topic, JOB_COMPLETED_SCHEMA, announcement),
            )
            outputs.append(Encoded(topic, item.job_id.encode(), body))
        return outputs

    def _parked(self, item: Item, fence: Fence) -> Encoded:
        """The DeadLetter record for the stage's DLQ, with the original key and bytes."""
        assert item.failure is not None
        value = dead_letter_value(
            self.stage.name,
            item.job_id if item.inbound else None,
            item.origin,
            item.message,
            item.failure,
        )
        topic = self.stage.dead_letter_topic
        body = self._retrying(
            fence, "encode", lambda: self.codec.encode(topic, DEAD_LETTER_SCHEMA, value)
        )
        log.error(
            "dead-lettered: %s",
            item.failure.exception_message,
            extra={
                **job_fields(item),
                "stage": self.stage.name,
                "reason": item.failure.reason,
                "exception_type": item.failure.exception_type,
                "attempt": item.failure.attempts,
            },
        )
        return Encoded(topic, item.message.key(), body, dead_letter_headers(value))

    def _store(self, items: list[Item], fence: Fence) -> None:
        """One transaction for the batch; should a stage's store fail, each item alone."""
        fresh = [item for item in items if item.replayed_from is None]
        if not fresh:
            return
        try:
            with transaction(self.pool) as conn:
                self._store_items(conn, fresh)
            return
        except TransientError:
            raise
        except Exception:
            log.warning(
                "batch store failed; storing items one by one", extra={"stage": self.stage.name}
            )
        for item in fresh:
            try:
                with transaction(self.pool) as conn:
                    self._store_items(conn, [item])
            except TransientError:
                raise
            except Exception as exc:
                item.failure = self._failure(
                    exc, attempts=item.inbound.attempt if item.inbound else 1
                )
                item.result = None
                item.outputs = self._dead_letter(item, fence)
                with transaction(self.pool) as conn:
                    self._store_items(conn, [item])

    def _store_items(self, conn: Connection, items: list[Item]) -> None:
        outcomes: list[stage_runs.RunOutcome] = []
        entries: list[audit.AuditEntry] = []
        for item in items:
            if item.result is not None and item.inbound is not None:
                self.stage.store(conn, item.inbound, item.result)
            if item.failure is not None and self.on_dead_letter is not None:
                self.on_dead_letter(conn, item)
            attempt = (
                item.failure.attempts
                if item.failure
                else (item.inbound.attempt if item.inbound else 1)
            )
            outcomes.append(
                stage_runs.RunOutcome(
                    run_key=item.run_key,
                    job_id=item.job_id,
                    customer_id=item.customer_id,
                    status=item.status,
                    attempts=attempt,
                    outputs=[o.to_json() for o in item.outputs],
                    reason=item.failure.reason if item.failure else None,
                    error_message=item.failure.exception_message if item.failure else None,
                )
            )
            entries.append(
                audit.AuditEntry(
                    job_id=item.job_id,
                    customer_id=item.customer_id,
                    stage=self.stage.name,
                    event=f"stage_{item.status}",
                    status=item.status,
                    reason=item.failure.reason if item.failure else None,
                    attempt=attempt,
                    detail={"duration_ms": round(item.duration_ms, 3), "run_key": item.run_key},
                )
            )
        stage_runs.finish_runs(conn, self.stage.name, outcomes)
        audit.append(conn, entries)

    # -- retry plumbing ------------------------------------------------------------

    def _retrying(self, fence: Fence, step: str, action: Callable[[], T]) -> T:
        """Run ``action``, retrying transient faults with backoff until it succeeds."""
        retry = 0
        while True:
            fence.check()
            try:
                return action()
            except TransientError as exc:
                retry += 1
                metrics.RETRIES.labels(self.stage.name, exc.reason).inc()
                log.warning(
                    "%s: transient fault, retrying: %s",
                    step,
                    exc.message,
                    extra={"stage": self.stage.name, "reason": exc.reason, "attempt": retry},
                )
                fence.sleep(self._delay(retry))

    def _delay(self, retry: int) -> float:
        return backoff_seconds(
            retry,
            self.settings.transient_backoff_initial_seconds,
            self.settings.transient_backoff_max_seconds,
        )

    def _note_retry(
        self, item: Item, reason: Reason, error_class: ErrorClass, exc: Exception
    ) -> None:
        metrics.RETRIES.labels(self.stage.name, reason).inc()
        log.warning(
            "handler failed, retrying: %s",
            exc,
            extra={
                **job_fields(item),
                "stage": self.stage.name,
                "reason": reason,
                "error_class": error_class,
                "exception_type": type(exc).__name__,
            },
        )

    def _failure(self, exc: BaseException, attempts: int) -> Failure:
        _, reason = classify(exc)
        return Failure(
            reason=reason,
            exception_type=type(exc).__name__,
            exception_message=str(exc),
            attempts=attempts,
        )

    def _count(self, items: list[Item]) -> None:
        for item in items:
            if item.replayed_from is not None:
                outcome = "short_circuited"
            elif item.failure is not None:
                outcome = "dead_lettered"
                metrics.DEAD_LETTERS.labels(self.stage.name, item.failure.reason).inc()
            else:
                outcome = "processed"
            metrics.MESSAGES.labels(self.stage.name, outcome).inc()
            if outcome != "dead_lettered":  # dead letters were logged when made
                log.info(
                    outcome.replace("_", "-"),
                    extra={
                        **job_fields(item),
                        "stage": self.stage.name,
                        "duration_ms": round(item.duration_ms, 3),
                    },
                )


def _with_attempt(inbound: Inbound, attempt: int) -> Inbound:
    return Inbound(
        key=inbound.key,
        value=inbound.value,
        topic=inbound.topic,
        partition=inbound.partition,
        offset=inbound.offset,
        timestamp_ms=inbound.timestamp_ms,
        attempt=attempt,
    )
