"""The Faust app: reads CostEvents, records each batch in one transaction, emits budget events.

Faust (faust-streaming, over aiokafka) is used for what it does well here: a consumer
group with at-least-once delivery, batching (``take_events``) and acks that move the
committed offset only past events whose batch was recorded. Deduplication is the ledger's
primary key, not Faust's ``exactly_once`` (docs/decisions/0003-cost-aggregator.md), and
no Faust tables are kept: budget checks read PostgreSQL, which is the record anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.streams import Stream
from faust.types import EventT

from schemas.codec import Codec
from sinks.db import Pool
from sinks.ledger import CostEvent
from streams.costs import metrics
from streams.costs.batch import BatchOutcome, Crossing, decode_events, record_batch
from streams.costs.events import costs_topic
from topics.catalogue import BUDGETS_TOPIC
from vidinsight.errors import TransientError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

# How the Avro enum of BudgetEvent names the thresholds the budget_events table stores.
THRESHOLD_SYMBOLS = {"80pct": "warn", "100pct": "exceeded"}


def budget_topic(settings: Settings) -> str:
    """The topic budget events go to."""
    return settings.costs_budget_topic or BUDGETS_TOPIC


def broker_urls(bootstrap: str) -> list[str]:
    """Faust wants one ``kafka://host:port`` URL per bootstrap server."""
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def faust_datadir(settings: Settings) -> str:
    """Where Faust keeps per-app state: under the state dir, not "<id>-data" in the cwd.

    Faust formats ``{conf.name}`` itself and creates only the last directory level.
    """
    parent = settings.state_dir / "faust"
    parent.mkdir(parents=True, exist_ok=True)
    return str(parent / "{conf.name}")


def faust_app(app_id: str, settings: Settings) -> faust.App:
    """A Faust app configured as the aggregator runs (also the benchmark's no-op ceiling)."""
    return faust.App(
        app_id,
        broker=broker_urls(settings.kafka_bootstrap),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        datadir=faust_datadir(settings),
        # No tables and a single agent: the assignor's leader topic is not needed.
        topic_disable_leader=True,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.costs_max_fetch_bytes,
        broker_commit_interval=settings.costs_commit_interval_seconds,
        broker_session_timeout=settings.costs_session_timeout_seconds,
        broker_heartbeat_interval=settings.costs_session_timeout_seconds / 5,
        producer_acks=-1,
    )


def build_app(settings: Settings, pool: Pool, codec: Codec) -> faust.App:
    """The aggregator app, its consumer group named by ``costs_app_id``."""
    app = faust_app(settings.costs_app_id, settings)
    source = app.topic(
        costs_topic(settings), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    sink = app.topic(
        budget_topic(settings), key_type=bytes, value_type=bytes, value_serializer="raw"
    )

    @app.agent(source)
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        """One transaction per batch; the batch is acked (offsets committable) after it."""
        assert isinstance(stream, Stream)  # take_events is on the class, not the protocol
        async for events in stream.take_events(
            settings.costs_batch_max_events, within=settings.costs_batch_max_wait_seconds
        ):
            started = time.perf_counter()
            outcome = await _record_until_done(settings, pool, codec, events)
            outcome.duration_ms = (time.perf_counter() - started) * 1000
            for crossing in outcome.crossings:
                body = encode_budget_event(codec, budget_topic(settings), crossing)
                sent = await sink.send(key=crossing.status.customer_id.encode(), value=body)
                await sent  # delivered before the batch is acked
            _observe(app, outcome, events)

    return app


async def _record_until_done(
    settings: Settings, pool: Pool, codec: Codec, events: Sequence[EventT]
) -> BatchOutcome:
    """Decode and record the batch, retrying transient faults until it is recorded.

    The batch's events are acked only after this returns, so while PostgreSQL or the
    registry is down the offsets stay where they are and nothing is lost or skipped.
    """
    topic = costs_topic(settings)
    delay = settings.transient_backoff_initial_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncio.to_thread(_record, pool, codec, topic, events)
        except TransientError as exc:
            log.warning(
                "batch not recorded, retrying: %s",
                exc.message,
                extra={"reason": exc.reason, "attempt": attempt, "stage": "costs"},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.transient_backoff_max_seconds)


def _record(pool: Pool, codec: Codec, topic: str, events: Sequence[EventT]) -> BatchOutcome:
    """The blocking part of a batch (registry lookups, one transaction), run in a thread."""
    decoded, undecodable = decode_events(codec, topic, [e.value for e in events])
    outcome = record_batch(pool, decoded, datetime.now(UTC))
    outcome.undecodable = undecodable
    return outcome


def encode_budget_event(codec: Codec, topic: str, crossing: Crossing) -> bytes:
    """The BudgetEvent for a crossing, in the Confluent wire format."""
    now = datetime.now(UTC)
    value: dict[str, Any] = {
        "customer_id": crossing.status.customer_id,
        "month": now.strftime("%Y-%m"),
        "threshold": THRESHOLD_SYMBOLS[crossing.threshold],
        "spend_usd_micros": crossing.status.spend_usd_micros,
        "budget_usd_micros": crossing.status.budget_usd_micros or 0,
        "crossed_at_ms": int(time.time() * 1000),
    }
    return codec.encode(topic, "BudgetEvent", value)


def _observe(app: faust.App, outcome: BatchOutcome, events: Sequence[EventT]) -> None:
    """Metrics and one log line per crossing (the record of a batch is PostgreSQL's)."""
    for labels, amount in spend_by_labels(outcome.new).items():
        metrics.SPEND_USD_MICROS.labels(*labels).inc(amount)
    metrics.EVENTS.inc(len(outcome.new))
    metrics.DUPLICATES.inc(outcome.duplicates)
    metrics.UNDECODABLE.inc(outcome.undecodable)
    for crossing in outcome.crossings:
        metrics.BUDGET_CROSSINGS.labels(crossing.status.customer_id, crossing.threshold).inc()
        metrics.BUDGET_LAST_CROSSED.labels(
            crossing.status.customer_id, crossing.threshold
        ).set_to_current_time()
        log.warning(
            "budget threshold %s crossed",
            crossing.threshold,
            extra={
                "customer_id": crossing.status.customer_id,
                "stage": "costs",
                "event": "budget_" + THRESHOLD_SYMBOLS[crossing.threshold],
                "detail": {
                    "spend_usd_micros": crossing.status.spend_usd_micros,
                    "budget_usd_micros": crossing.status.budget_usd_micros,
                },
            },
        )
    if outcome.new or outcome.duplicates:
        log.info(
            "batch recorded: %d new, %d duplicate",
            len(outcome.new),
            outcome.duplicates,
            extra={
                "stage": "costs",
                "event": "batch_recorded",
                "duration_ms": round(outcome.duration_ms, 1),
            },
        )
    _observe_lag(app, events)


def spend_by_labels(events: Sequence[CostEvent]) -> dict[tuple[str, str, str, str], int]:
    """The batch's spend per (customer, stage, provider, model): one counter increment per
    series instead of a label lookup (and its lock) per event, on the event loop."""
    spend: dict[tuple[str, str, str, str], int] = {}
    for event in events:
        labels = (event.customer_id, event.stage, event.provider, event.model)
        spend[labels] = spend.get(labels, 0) + event.amount_usd_micros
    return spend


def _observe_lag(app: faust.App, events: Sequence[EventT]) -> None:
    """Messages left behind the last one of this batch, per partition."""
    last: dict[Any, int] = {}
    for event in events:
        last[event.message.tp] = max(last.get(event.message.tp, -1), event.message.offset)
    for tp, offset in last.items():
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - offset - 1))
