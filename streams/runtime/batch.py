"""One partition's messages through the stage contract, one message at a time, in a thread.

Per message, as docs/architecture.md fixes it: decode; short-circuit a run already
finished (re-emit its stored outputs); stop a cancelled job's message before any work;
count the attempt as the handler starts; run the handler under its deadline; one
transaction for the stage's upserts, the stage-run record and the audit entry; produce
the outputs and cost events and wait for delivery; report the offset as done so the
worker can commit it. A later message is never charged for an attempt it did not run.

Light messages share the last two steps: the finished messages of a group are stored in
one transaction and their outputs produced together once the group is
``VI_BATCH_MAX_WAIT_MS`` old (or the messages run out), and a group is also flushed while
the next handler is still running, so a message's effects never wait for a slow one
behind it longer than that.

Whatever the runtime cannot decode, store, encode or produce for one message is
dead-lettered with a reason and the partition moves on. Transient faults are retried
with backoff for as long as it takes (the partition stays paused); only the fence stops
the retrying. The fence is checked before every message and after every handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Message

from schemas.codec import Codec
from sinks import audit, jobs, stage_runs
from sinks.blobs import BlobStore
from sinks.db import Connection, Pool, statement, transaction
from streams.runtime import metrics
from streams.runtime.backoff import backoff_seconds
from streams.runtime.context import HandlerContext, deadline_seconds
from streams.runtime.dead_letter import (
    Failure,
    dead_letter_headers,
    dead_letter_value,
    without_original_value,
)
from streams.runtime.delivery import Producers, Undeliverable, deliver
from streams.runtime.encoded import Encoded
from streams.runtime.failpoints import Failpoint, Failpoints
from streams.runtime.fence import Abandoned, Fence
from streams.runtime.origin import Origin, origin_of
from streams.runtime.stage import Inbound, Stage, StageResult
from streams.runtime.watchdog import Hung, call_with_deadline
from telemetry.logs import message_context, update_message_context
from telemetry.redaction import public_message
from vidinsight.errors import (
    ErrorClass,
    JobCancelled,
    Reason,
    TransientError,
    classify,
    costs_of,
)
from vidinsight.settings import Settings

log = logging.getLogger("vidinsight.runtime")
T = TypeVar("T")

COSTS_SCHEMA = "CostEvent"
DEAD_LETTER_SCHEMA = "DeadLetter"
JOB_COMPLETED_SCHEMA = "JobCompleted"
# Room for the record's framing beside key, value and headers (Kafka's record overhead).
RECORD_OVERHEAD_BYTES = 512


class Unhealthy(Exception):
    """A handler would not give up: the process must exit once its progress is committed."""


@dataclass
class Item:
    """One message and what became of it."""

    message: Message
    origin: Origin
    run_key: str
    inbound: Inbound | None = None
    failure: Failure | None = None
    result: StageResult | None = None
    cancelled: bool = False
    replayed: bool = False  # answered from a finished run's stored outputs
    # What goes to the wire: the stage's outputs (or the dead letter and the job's failure
    # announcement that replace them), then the cost events, which nothing replaces:
    # money spent is attributed however the message ends.
    messages: list[Encoded] = field(default_factory=list)
    costs: list[Encoded] = field(default_factory=list)
    duration_ms: float = 0.0
    taken_at: float = field(default_factory=time.monotonic)

    def age_seconds(self) -> float:
        return time.monotonic() - self.taken_at

    @property
    def job_id(self) -> str:
        return self.inbound.job_id if self.inbound else self.run_key

    @property
    def customer_id(self) -> str | None:
        return self.inbound.customer_id if self.inbound else None

    @property
    def attempt(self) -> int:
        return self.inbound.attempt if self.inbound else 1

    @property
    def status(self) -> str:
        if self.failure:
            return "dead_lettered"
        return "cancelled" if self.cancelled else "succeeded"

    @property
    def outputs(self) -> list[Encoded]:
        return self.messages + self.costs


@dataclass
class Group:
    """Finished messages whose effects are stored and produced together."""

    done: Callable[[int], None]
    items: list[Item] = field(default_factory=list)

    def add(self, item: Item) -> None:
        self.items.append(item)

    def age_ms(self) -> float:
        return self.items[0].age_seconds() * 1000 if self.items else 0.0


def storable(text: str) -> str:
    """``text`` as PostgreSQL can store it (a text value cannot hold a NUL character)."""
    return text.replace("\x00", "\\x00")


def run_key_of(message: Message, origin: Origin) -> str:
    """The stage-run key: the message key, or its coordinates when it has none."""
    key = message.key()
    if key:
        return key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    return f"{origin.topic}/{origin.partition}/{origin.offset}"


def job_fields(item: Item, stage: str) -> dict[str, Any]:
    """The log context of every line about this item (invariant I4)."""
    return {
        "job_id": storable(item.job_id),
        "customer_id": item.customer_id,
        "stage": stage,
        "attempt": item.attempt,
        "topic": item.origin.topic,
        "partition": item.origin.partition,
        "offset": item.origin.offset,
    }


def _size(message: Encoded) -> int:
    headers = sum(len(name) + len(value or b"") for name, value in message.headers)
    return len(message.key or b"") + len(message.value or b"") + headers + RECORD_OVERHEAD_BYTES


class BatchProcessor:
    """Runs one stage's messages; shared by the partition threads of a process."""

    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        codec: Codec,
        pool: Pool,
        statements: Pool,
        producers: Producers,
        blobs: BlobStore,
        on_dead_letter: Callable[[Connection, Item], None] | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.codec = codec
        self.pool = pool
        # Autocommit connections for the runtime's one-statement bookkeeping (a run's
        # begin), which every message pays for: one round trip each.
        self.statements = statements
        self.producers = producers
        self.blobs = blobs
        self.on_dead_letter = on_dead_letter
        self.failpoints = Failpoints(settings.failpoints)
        self.unhealthy = False

    # -- the contract, message by message ------------------------------------------

    def run(self, messages: Sequence[Message], fence: Fence, done: Callable[[int], None]) -> int:
        """Process ``messages`` (one partition, in order), calling ``done(next_offset)`` as
        the effects of each group are delivered; return the offset to commit after the last."""
        group = Group(done)
        try:
            for message in messages:
                fence.check()
                group.add(self._prepare(message, fence, lambda: self._flush_if_due(group, fence)))
                self._flush_if_due(group, fence)
                if self.unhealthy:
                    raise Unhealthy("a handler did not give up after its deadline")
        except Unhealthy:
            self._flush(group, fence)  # what finished is kept; the hung message is not
            raise
        self._flush(group, fence)
        return origin_of(messages[-1]).offset + 1

    def _prepare(self, message: Message, fence: Fence, idle: Callable[[], None]) -> Item:
        """Decode, short-circuit or run the handler: the item ready to store and produce."""
        item = self._decode(message, fence)
        with message_context(**job_fields(item, self.stage.name)):
            self._settle(item, fence, idle)
            self.failpoints.hit(Failpoint.AFTER_HANDLER)
            fence.check()
        return item

    def _flush_if_due(self, group: Group, fence: Fence) -> None:
        if group.items and group.age_ms() >= self.settings.batch_max_wait_ms:
            self._flush(group, fence)

    def _flush(self, group: Group, fence: Fence) -> None:
        """Store the group's items, produce their outputs, then report them done."""
        if not group.items:
            return
        self._store(group.items, fence)
        self.failpoints.hit(Failpoint.AFTER_UPSERT)
        fence.check()
        self._deliver(group.items, fence)
        self.failpoints.hit(Failpoint.AFTER_PRODUCE)
        for item in group.items:
            metrics.BATCH_SECONDS.labels(self.stage.name).observe(item.age_seconds())
            with message_context(**job_fields(item, self.stage.name)):
                self._count(item)
        group.done(group.items[-1].origin.offset + 1)
        group.items = []

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
            item.failure = _failure(exc, attempts=1)
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
        unstorable = [
            name
            for name, text in (
                ("key", item.run_key),
                ("job_id", item.job_id),
                ("customer_id", item.customer_id or ""),
            )
            if "\x00" in text
        ]
        if unstorable:
            item.failure = Failure(
                reason=Reason.UNSTORABLE_MESSAGE,
                exception_type="NulCharacter",
                exception_message=f"{', '.join(unstorable)} holds a NUL character, which"
                " PostgreSQL cannot store",
                attempts=1,
            )
        return item

    def _settle(self, item: Item, fence: Fence, idle: Callable[[], None]) -> None:
        """Decide the item's outcome: stored outputs, cancelled, dead letter or a result."""
        try:
            begun = self._retrying(fence, "begin", lambda: self._begin(item))
        except Abandoned:
            raise
        except Exception as exc:  # PostgreSQL refused this message's key or values
            item.failure = item.failure or _failure(exc, 1, Reason.UNSTORABLE_MESSAGE)
            begun = None
        if isinstance(begun, stage_runs.FinishedRun):
            item.messages = [Encoded.from_json(o) for o in begun.outputs]
            item.replayed = True
        elif item.failure is not None:
            item.messages = self._dead_letter(item, fence)
        elif begun == stage_runs.CANCELLED:
            item.cancelled = True
        elif isinstance(begun, stage_runs.Begun):
            self._run_handler(item, begun, fence, idle)

    def _begin(self, item: Item) -> stage_runs.FinishedRun | stage_runs.Begun | str | None:
        """The finished run; "cancelled"; or the attempt counted as the handler is about to run."""
        customer, key = item.customer_id, storable(item.run_key)
        with statement(self.statements) as conn:
            if item.failure is not None or item.inbound is None:  # nothing to run
                return stage_runs.finished_run(conn, self.stage.name, customer, key)
            start = stage_runs.RunStart(
                key, item.job_id, customer, item.origin.topic, item.origin.partition,
                item.origin.offset,
            )  # fmt: skip
            return stage_runs.begin(conn, self.stage.name, start, self.stage.honours_cancel)

    def _run_handler(
        self, item: Item, begun: stage_runs.Begun, fence: Fence, idle: Callable[[], None]
    ) -> None:
        """The handler under its deadline: transient faults retried forever, unknown ones
        and timeouts a few times, permanent ones dead-lettered at once."""
        assert item.inbound is not None
        item.inbound = _with_attempt(item.inbound, begun.attempts)
        update_message_context(attempt=item.attempt)
        if begun.attempts > self.settings.max_deliveries:
            failure = Failure(
                reason=begun.previous_reason or Reason.RETRIES_EXHAUSTED,
                exception_type="RedeliveryLimit",
                exception_message=f"delivered {begun.attempts} times without finishing",
                attempts=begun.attempts,
            )
            self._park(item, failure, fence)
            return
        unknown_failures = retry = 0
        paid: dict[str, Mapping[str, Any]] = {}  # cost events of failed attempts, by id
        while True:
            fence.check()
            started = time.monotonic()
            try:
                result = self._call(item, fence, idle)
            except Abandoned:
                self._release(item)
                raise
            except Hung as exc:
                self._hung(item, begun.attempts, exc, paid, fence)
                return
            except Exception as exc:
                paid.update((str(event["event_id"]), event) for event in costs_of(exc))
                error_class, reason = classify(exc)
                if isinstance(exc, JobCancelled):
                    item.cancelled = True
                elif reason is Reason.STAGE_TIMEOUT:
                    metrics.TIMEOUTS.labels(self.stage.name).inc()
                unknown_failures += error_class is ErrorClass.UNKNOWN
                if (
                    item.cancelled
                    or error_class is ErrorClass.PERMANENT
                    or (unknown_failures >= self.settings.unknown_error_max_attempts)
                ):
                    if not item.cancelled:
                        self._park(item, _failure(exc, attempts=item.attempt), fence)
                    item.costs = self._encode_costs(list(paid.values()), fence)
                    return
                retry += 1
                self._note_retry(item, reason, error_class, exc)
                item.inbound = _with_attempt(item.inbound, item.attempt + 1)
                update_message_context(attempt=item.attempt)
                fence.sleep(self._delay(retry))
                continue
            fence.check()
            item.duration_ms = (time.monotonic() - started) * 1000
            metrics.HANDLER_SECONDS.labels(self.stage.name).observe(item.duration_ms / 1000)
            item.result = result
            self._encode_result(item, paid, fence)
            return

    def _call(self, item: Item, fence: Fence, idle: Callable[[], None]) -> StageResult:
        assert item.inbound is not None
        inbound = item.inbound
        self.failpoints.refuse_flagged(self.stage.name, inbound.customer_id)
        ctx = HandlerContext(
            inbound=inbound,
            stage=self.stage.name,
            settings=self.settings,
            pool=self.pool,
            blobs=self.blobs,
            deadline=time.monotonic()
            + deadline_seconds(self.settings, self.stage.name, inbound.value),
        )
        return call_with_deadline(
            lambda c: self.stage.handler(c.inbound, c),
            ctx,
            fence,
            self.settings.stage_deadline_grace_seconds,
            job_fields(item, self.stage.name),
            idle,
        )

    def _encode_result(
        self, item: Item, paid: Mapping[str, Mapping[str, Any]], fence: Fence
    ) -> None:
        """The result's outputs and costs (and those of failed attempts) ready for the wire;
        an output the broker would refuse fails the message instead of being produced."""
        assert item.result is not None
        result = item.result
        emitted = {str(event["event_id"]) for event in result.cost_events}
        costs = [*result.cost_events, *(e for k, e in paid.items() if k not in emitted)]
        item.costs = self._encode_costs(costs, fence)
        try:
            item.messages = self._retrying(
                fence,
                "encode",
                lambda: [
                    Encoded(o.topic, o.key.encode(), self.codec.encode(o.topic, o.schema, o.value))
                    for o in result.outputs
                ],
            )
        except Abandoned:
            raise
        except Exception as exc:
            self._park(item, _failure(exc, item.attempt, Reason.UNSTORABLE_MESSAGE), fence)
            return
        largest = max(item.messages, key=_size, default=None)
        if largest is not None and _size(largest) > self.settings.max_message_bytes:
            failure = Failure(
                reason=Reason.MESSAGE_TOO_LARGE,
                exception_type="MessageTooLarge",
                exception_message=f"an output for {largest.topic} is {_size(largest)} bytes;"
                f" the most the broker takes is {self.settings.max_message_bytes}",
                attempts=item.attempt,
            )
            self._park(item, failure, fence)

    def _park(self, item: Item, failure: Failure, fence: Fence) -> None:
        """The message fails: its dead letter (and the job's announcement) replace its
        outputs; its costs stay."""
        item.failure, item.result, item.cancelled = failure, None, False
        item.messages = self._dead_letter(item, fence)

    def _hung(
        self,
        item: Item,
        delivered: int,
        exc: Hung,
        paid: Mapping[str, Mapping[str, Any]],
        fence: Fence,
    ) -> None:
        """A handler that will not give up: park the message if its timeouts are used up,
        else record why this attempt ended and leave it for a redelivery; either way the
        process is unhealthy and exits once this message is settled."""
        metrics.TIMEOUTS.labels(self.stage.name).inc()
        metrics.HUNG.labels(self.stage.name).inc()
        self.unhealthy = True
        log.error(
            "handler hung past its deadline; the worker will exit to be restarted: %s",
            exc,
            extra={"reason": Reason.STAGE_TIMEOUT},
        )
        failure = Failure(Reason.STAGE_TIMEOUT, "HandlerHung", str(exc), item.attempt)
        if delivered >= self.settings.unknown_error_max_attempts:
            self._park(item, failure, fence)
            item.costs = self._encode_costs(list(paid.values()), fence)
            return
        key = storable(item.run_key)
        self._retrying(
            fence,
            "note",
            lambda: self._in_statement(
                lambda conn: stage_runs.note_failure(
                    conn, self.stage.name, item.customer_id, key, failure.reason, str(exc)
                )
            ),
        )
        raise Unhealthy(str(exc))

    def _release(self, item: Item) -> None:
        """Take back the attempt of a handler interrupted by the loss of its partition."""
        try:
            self._in_statement(
                lambda conn: stage_runs.release_attempt(
                    conn, self.stage.name, item.customer_id, storable(item.run_key)
                )
            )
        except Exception as exc:  # bookkeeping only: the message is redelivered anyway
            log.warning(
                "could not take back an interrupted attempt: %s",
                exc,
                extra={"reason": classify(exc)[1]},
            )

    # -- storing -------------------------------------------------------------------

    def _store(self, items: list[Item], fence: Fence) -> None:
        """One transaction for the group; should PostgreSQL refuse it, each item alone."""
        fresh = [item for item in items if not item.replayed]
        if not fresh:
            return
        announcements = {
            id(item): self._cancel_announcement(item, fence) for item in fresh if item.cancelled
        }
        if len(fresh) > 1:
            try:
                self._retrying(fence, "store", lambda: self._store_together(fresh, announcements))
                return
            except Abandoned:
                raise
            except Exception as exc:
                log.warning("group store refused (%s); storing its messages one by one", exc)
        for item in fresh:
            with message_context(**job_fields(item, self.stage.name)):
                self._store_alone(item, announcements.get(id(item)), fence)

    def _store_alone(self, item: Item, announcement: Encoded | None, fence: Fence) -> None:
        """One transaction for the item; if PostgreSQL refuses it, the item is dead-lettered."""
        try:
            self._retrying(
                fence, "store", lambda: self._store_together([item], {id(item): announcement})
            )
            return
        except Abandoned:
            raise
        except Exception as exc:
            log.error("store refused: %s", exc, extra={"reason": Reason.UNSTORABLE_MESSAGE})
            failure = _failure(exc, item.attempt, Reason.UNSTORABLE_MESSAGE)
            self._park(item, failure, fence)
        self._record_dead_letter(item, fence)

    def _record_dead_letter(self, item: Item, fence: Fence) -> None:
        """Store a dead letter that replaced an item's result; the letter goes out anyway."""
        try:
            self._retrying(fence, "store", lambda: self._store_together([item], {}))
        except Abandoned:
            raise
        except Exception as exc:  # the partition moves on
            log.error(
                "the dead letter's record was refused too: %s",
                exc,
                extra={"reason": Reason.UNSTORABLE_MESSAGE},
            )

    def _store_together(
        self, items: list[Item], announcements: Mapping[int, Encoded | None]
    ) -> None:
        with transaction(self.pool) as conn:
            for item in items:
                if item.cancelled:
                    claimed = jobs.claim_cancel_announcement(conn, item.job_id, item.customer_id)
                    announcement = announcements.get(id(item))
                    item.messages = [announcement] if claimed and announcement else []
                elif item.result is not None and item.inbound is not None:
                    self.stage.store(conn, item.inbound, item.result)
                if item.failure is not None and self.on_dead_letter is not None:
                    self.on_dead_letter(conn, item)
            stage_runs.finish_runs(conn, self.stage.name, [self._outcome(i) for i in items])
            audit.append(conn, [self._audit_entry(i) for i in items])

    def _outcome(self, item: Item) -> stage_runs.RunOutcome:
        """The stage-run record, with the outputs a redelivery re-emits."""
        return stage_runs.RunOutcome(
            run_key=storable(item.run_key),
            job_id=storable(item.job_id),
            customer_id=item.customer_id,
            status=item.status,
            attempts=item.failure.attempts if item.failure else item.attempt,
            outputs=[o.to_json() for o in item.outputs],
            reason=_reason(item),
            error_message=item.failure.exception_message if item.failure else None,
        )

    def _audit_entry(self, item: Item) -> audit.AuditEntry:
        return audit.AuditEntry(
            job_id=storable(item.job_id),
            customer_id=item.customer_id,
            stage=self.stage.name,
            event=f"stage_{item.status}",
            status=item.status,
            reason=_reason(item),
            attempt=item.failure.attempts if item.failure else item.attempt,
            detail={"duration_ms": round(item.duration_ms, 3), "run_key": storable(item.run_key)},
        )

    # -- delivering ----------------------------------------------------------------

    def _deliver(self, items: list[Item], fence: Fence) -> None:
        """Produce the group's messages; what the broker refuses for good is dead-lettered."""
        refused = self._produce([out for item in items for out in item.outputs], fence)
        for item in items:
            mine = [r for r in refused if any(r.message is out for out in item.outputs)]
            if mine:
                with message_context(**job_fields(item, self.stage.name)):
                    self._undeliverable(item, mine[0].error, fence)

    def _undeliverable(self, item: Item, error: str, fence: Fence) -> None:
        """The broker refused one of the item's records for good: park the message instead."""
        log.error(
            "the broker refused an output: %s",
            error,
            extra={"reason": Reason.UNDELIVERABLE_MESSAGE},
        )
        if item.failure is not None and not item.replayed:
            return  # the dead letter itself was refused: logged, and the partition moves on
        item.replayed = False
        failure = Failure(Reason.UNDELIVERABLE_MESSAGE, "KafkaError", error, item.attempt)
        self._park(item, failure, fence)
        item.costs = []  # delivered (or refused) already
        self._record_dead_letter(item, fence)
        if self._produce(item.messages, fence):
            log.error("the dead letter was refused too", extra={"reason": failure.reason})

    def _produce(self, messages: list[Encoded], fence: Fence) -> list[Undeliverable]:
        return deliver(
            self.producers,
            messages,
            fence,
            self._delay,
            on_retry=lambda: metrics.RETRIES.labels(
                self.stage.name, Reason.BROKER_UNAVAILABLE
            ).inc(),
        )

    # -- building messages ---------------------------------------------------------

    def _encode_costs(self, events: Sequence[Mapping[str, Any]], fence: Fence) -> list[Encoded]:
        """Cost events for the costs topic, keyed by customer (the aggregator's partitioning)."""
        topic = self.stage.costs_topic
        return self._retrying(
            fence,
            "encode",
            lambda: [
                Encoded(
                    topic,
                    str(cost["customer_id"]).encode(),
                    self.codec.encode(topic, COSTS_SCHEMA, cost),
                )
                for cost in events
            ],
        )

    def _dead_letter(self, item: Item, fence: Fence) -> list[Encoded]:
        """The dead letter, and the job's failure announcement when the job is known."""
        assert item.failure is not None
        outputs = [self._parked(item, fence)]
        announcement = self._announcement(item, "failed", str(item.failure.reason), fence)
        return outputs + ([announcement] if announcement else [])

    def _cancel_announcement(self, item: Item, fence: Fence) -> Encoded | None:
        return self._announcement(item, "cancelled", Reason.JOB_CANCELLED.value, fence)

    def _announcement(self, item: Item, status: str, reason: str, fence: Fence) -> Encoded | None:
        """JobCompleted for a job that ended here, so notify and upstream hear of every end."""
        topic = self.stage.failure_topic
        if topic is None or item.inbound is None or item.customer_id is None:
            return None
        if "\x00" in item.job_id + item.customer_id:
            return None
        value = {
            "job_id": item.job_id,
            "customer_id": item.customer_id,
            "status": status,
            "reason": reason,
            "insights_uri": None,
            "completed_at_ms": int(time.time() * 1000),
        }
        body = self._retrying(
            fence, "encode", lambda: self.codec.encode(topic, JOB_COMPLETED_SCHEMA, value)
        )
        return Encoded(topic, item.job_id.encode(), body)

    def _parked(self, item: Item, fence: Fence) -> Encoded:
        """The DeadLetter record for the stage's DLQ, with the original key and bytes."""
        assert item.failure is not None
        topic = self.stage.dead_letter_topic
        value = dead_letter_value(
            self.stage.name,
            item.job_id if item.inbound else None,
            item.origin,
            item.message,
            item.failure,
        )
        headers = dead_letter_headers(value, storable(item.run_key), item.customer_id)
        parked = self._encode_dead_letter(topic, value, headers, fence)
        if _size(parked) > self.settings.max_message_bytes:
            value = without_original_value(value, len(item.message.value() or b""))
            parked = self._encode_dead_letter(topic, value, headers, fence)
        log.error(
            "dead-lettered: %s",
            item.failure.exception_message,
            extra={
                "reason": item.failure.reason,
                "exception_type": item.failure.exception_type,
                "attempt": item.failure.attempts,
            },
        )
        return parked

    def _encode_dead_letter(
        self, topic: str, value: dict[str, Any], headers: list[Any], fence: Fence
    ) -> Encoded:
        body = self._retrying(
            fence, "encode", lambda: self.codec.encode(topic, DEAD_LETTER_SCHEMA, value)
        )
        return Encoded(topic, value["original_key"], body, headers)

    # -- retry plumbing ------------------------------------------------------------

    def _in_statement(self, action: Callable[[Connection], None]) -> None:
        with statement(self.statements) as conn:
            action(conn)

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
                    extra={"reason": exc.reason, "attempt": retry},
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
                "reason": reason,
                "error_class": error_class,
                "exception_type": type(exc).__name__,
            },
        )

    def _count(self, item: Item) -> None:
        if item.replayed:
            outcome = "short_circuited"
        elif item.failure is not None:
            outcome = "dead_lettered"
            metrics.DEAD_LETTERS.labels(self.stage.name, item.failure.reason).inc()
        elif item.cancelled:
            outcome = "cancelled"
        else:
            outcome = "processed"
        metrics.MESSAGES.labels(self.stage.name, outcome).inc()
        if outcome != "dead_lettered":  # dead letters were logged when made
            log.info(outcome.replace("_", "-"), extra={"duration_ms": round(item.duration_ms, 3)})


def _failure(exc: BaseException, attempts: int, reason: Reason | None = None) -> Failure:
    """Why ``exc`` ends a message; ``reason`` overrides what the exception says of itself.

    The message is stored, put in dead-letter headers and shown to the job's customer,
    so it loses secrets, signed-URL queries and server paths first.
    """
    return Failure(
        reason=reason or classify(exc)[1],
        exception_type=type(exc).__name__,
        exception_message=public_message(str(exc)),
        attempts=attempts,
    )


def _reason(item: Item) -> str | None:
    if item.failure is not None:
        return item.failure.reason
    return Reason.JOB_CANCELLED.value if item.cancelled else None


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
