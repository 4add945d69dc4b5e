"""What a stage supplies to the runtime, and what it gets back from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sinks.db import Connection
from topics.catalogue import COSTS_TOPIC, JOBS_COMPLETED_TOPIC, STAGES

if TYPE_CHECKING:
    from streams.runtime.context import HandlerContext
    from vidinsight.settings import Settings


@dataclass(frozen=True)
class Inbound:
    """One decoded input message, with where it came from and how often it was tried."""

    key: str
    value: Mapping[str, Any]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    attempt: int

    @property
    def job_id(self) -> str:
        return str(self.value.get("job_id") or self.key)

    @property
    def customer_id(self) -> str | None:
        customer = self.value.get("customer_id")
        return str(customer) if customer is not None else None


@dataclass(frozen=True)
class Output:
    """A message the stage emits: the runtime encodes it with ``schema`` and produces it."""

    topic: str
    schema: str
    key: str
    value: Mapping[str, Any]


@dataclass
class StageResult:
    """What a handler returns: its outputs, its cost events and a payload for its upserts."""

    outputs: list[Output] = field(default_factory=list)
    cost_events: list[Mapping[str, Any]] = field(default_factory=list)
    payload: Any = None


Handler = Callable[[Inbound, "HandlerContext"], StageResult]
Store = Callable[[Connection, Inbound, StageResult], None]


def store_nothing(conn: Connection, inbound: Inbound, result: StageResult) -> None:
    """For stages whose whole effect is their outputs."""


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its input, its handler and the upserts that store its result.

    ``store`` runs inside the runtime's one transaction for the batch, beside the
    stage-run record and the audit entry, so a result is stored exactly when its
    run is marked done.
    """

    name: str
    input_topic: str
    input_schema: str
    handler: Handler
    store: Store = store_nothing
    dlq_topic: str | None = None
    group_id: str | None = None
    costs_topic: str = COSTS_TOPIC
    # Where a job whose message is dead-lettered is announced as failed (JobCompleted,
    # status failed, with the reason), so notify and upstream systems hear of every end.
    # None for a stage that reads that topic itself (notify).
    failure_topic: str | None = JOBS_COMPLETED_TOPIC
    # The stage-run key of a decoded message, when the message key alone does not name
    # one unit of work (notify: a job's "failed" and, after a replay, its "completed").
    run_key: Callable[[Mapping[str, Any]], str] | None = None
    # Whether a cancelled job's messages stop here before any work (every stage but the
    # one that tells the customer how the job ended, cancelled included).
    honours_cancel: bool = True
    # Messages a process handles at once (one per partition at a time); None: the
    # setting ``worker_threads``. A stage whose handlers mostly wait for a shared
    # resource (transcribe: the model's turns) may want more.
    handler_threads: Callable[[Settings], int] | None = None

    def threads(self, settings: Settings) -> int:
        """How many handler threads a worker of this stage runs."""
        return self.handler_threads(settings) if self.handler_threads else settings.worker_threads

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"vi.{self.name}"

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"vi.{self.name}.dlq"


def on_topics(
    name: str,
    topics: Mapping[str, str] | None,
    group_id: str | None,
    make_handler: Callable[[Mapping[str, str]], Handler],
    **fields: Any,
) -> Stage:
    """The stage ``name`` wired to the catalogue's topics, or to the private ones a test
    names in ``topics`` (keys: input, output, dlq, costs, failures, and any of a stage's
    own such as preprocess's "ready").

    ``make_handler`` gets the resolved topics ("output" defaults to the catalogue's first
    output topic) and returns the handler that writes to them.
    """
    wiring = STAGES[name]
    chosen = dict(topics or {})
    resolved = {"output": wiring.output_topics[0] if wiring.output_topics else "", **chosen}
    if "costs" in chosen:
        fields["costs_topic"] = chosen["costs"]
    if "failures" in chosen:
        fields["failure_topic"] = chosen["failures"]
    return Stage(
        name,
        chosen.get("input", wiring.input_topic),
        wiring.input_schema,
        make_handler(resolved),
        dlq_topic=chosen.get("dlq"),
        group_id=group_id,
        **fields,
    )
