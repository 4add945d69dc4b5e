"""CostEvents: the topic they go to and how one is built, for every producer of them
(stage handlers, the upload sweeper) and the aggregator that reads them."""

from __future__ import annotations

from typing import Any

from inference.pricing import PriceBook
from topics.catalogue import COSTS_TOPIC
from vidinsight.settings import Settings

CostEvent = dict[str, Any]


def costs_topic(settings: Settings) -> str:
    """The topic of cost events (the catalogue's unless a test points elsewhere)."""
    return settings.costs_input_topic or COSTS_TOPIC


def priced_cost_event(
    prices: PriceBook,
    *,
    event_id: str,
    customer_id: str | None,
    job_id: str,
    stage: str,
    provider: str,
    model: str,
    unit: str,
    quantity: float,
    occurred_at_ms: int,
) -> CostEvent:
    """A CostEvent for ``quantity`` of one unit, priced from ``prices``.

    ``event_id`` must be fixed by what is charged (never random), so that the same
    charge produced twice is one event and the ledger counts it once.
    """
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "job_id": job_id,
        "stage": stage,
        "provider": provider,
        "model": model,
        "unit": unit,
        "quantity": float(quantity),
        "input_tokens": 0,
        "cached_tokens": 0,
        "output_tokens": 0,
        "amount_usd_micros": prices.cost_usd_micros(provider, model, {unit: quantity}),
        "occurred_at_ms": occurred_at_ms,
    }
