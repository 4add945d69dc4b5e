"""What the runtime hands a handler besides its message, so a stage module is its business.

A handler gets its settings, the process's database pool and blob store, the message's
deadline (every blocking call is given the time that remains), the job's cancellation
check, and a cost-event factory bound to the message. Its log lines carry the message's
job, customer, stage and attempt without being told (``telemetry.logs.message_context``,
set by the runtime around the call). A handler opens no connection or pool of its own
and reads no global settings.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from inference.pricing import load_pricing
from sinks.blobs import BlobStore
from sinks.budgets import ensure_within_budget
from sinks.db import Connection, Pool, transaction
from sinks.jobs import is_cancelled
from streams.costs.events import CostEvent, priced_cost_event
from streams.runtime.fence import Abandoned
from streams.runtime.stage import Inbound
from vidinsight.errors import JobCancelled, remaining_seconds
from vidinsight.settings import Settings

T = TypeVar("T")


class ProcessResource(Generic[T]):
    """One ``T`` per worker process (a loaded model, a client with a thread of its own),
    built from the settings of the first handler that asks for it."""

    def __init__(self, build: Callable[[Settings], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: list[T] = []

    def get(self, settings: Settings) -> T:
        with self._lock:
            if not self._built:
                self._built.append(self._build(settings))
            return self._built[0]


def media_seconds(value: Mapping[str, Any]) -> float:
    """Seconds of media a message covers: a chunk's span, a segment's (the last one runs
    to the video's end), else the video's duration, else 0."""
    start, end = value.get("start_seconds"), value.get("end_seconds")
    if start is not None and end is not None:
        return max(0.0, float(end) - float(start))
    duration = value.get("duration_seconds")
    whole = float(duration) if duration is not None else 0.0
    segment_start = value.get("segment_start_seconds")
    if segment_start is None:
        return whole
    segment_end = value.get("segment_end_seconds")
    return max(0.0, (whole if segment_end is None else float(segment_end)) - float(segment_start))


def deadline_seconds(settings: Settings, stage: str, value: Mapping[str, Any]) -> float:
    """The time one message of ``stage`` may take: a base plus seconds per media second."""
    base = settings.stage_deadline_base_seconds
    per_second = settings.stage_deadline_per_media_second
    return base.get(stage, base.get("default", 300.0)) + per_second.get(
        stage, per_second.get("default", 0.0)
    ) * media_seconds(value)


@dataclass
class HandlerContext:
    """One handler call's view of the platform."""

    inbound: Inbound
    stage: str
    settings: Settings
    pool: Pool
    blobs: BlobStore
    deadline: float  # a time.monotonic() instant
    _stopped: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction of the runtime's pool, for what a handler reads or records itself."""
        with transaction(self.pool) as conn:
            yield conn

    def check(self, what: str) -> None:
        """Stop here if the runtime gave up on this call: StageTimeout past the deadline,
        Abandoned when the partition was taken away."""
        remaining_seconds(self.deadline, what)
        if self._stopped.is_set():
            raise Abandoned()

    def ensure_not_cancelled(self, what: str) -> None:
        """Before paid or long work: stop if the customer cancelled the job meanwhile."""
        self.check(what)
        with self.transaction() as conn:
            if is_cancelled(conn, self.inbound.job_id, self.inbound.customer_id):
                raise JobCancelled(self.inbound.job_id)

    def ensure_within_budget(self, what: str) -> None:
        """Before a call a provider bills: PermanentError(budget_exceeded) once the job's
        customer has spent its monthly budget, whichever way the job arrived."""
        self.check(what)
        with self.transaction() as conn:
            ensure_within_budget(conn, str(self.inbound.customer_id), datetime.now(UTC))

    def stop(self) -> None:
        """Called by the runtime: the call's result will not be used; ``check`` raises."""
        self._stopped.set()

    def cost(self, item: str, provider: str, model: str, unit: str, quantity: float) -> CostEvent:
        """A CostEvent priced from the price book; its id is fixed by job, stage and item,
        so a redelivery's event is the same event (the ledger counts it once)."""
        job_id = self.inbound.job_id
        return priced_cost_event(
            load_pricing(),
            event_id=hashlib.sha256(f"{job_id}:{self.stage}:{item}:{unit}".encode()).hexdigest(),
            customer_id=self.inbound.customer_id,
            job_id=job_id,
            stage=self.stage,
            provider=provider,
            model=model,
            unit=unit,
            quantity=quantity,
            occurred_at_ms=int(time.time() * 1000),
        )
