"""Prometheus metrics of the cost aggregator (served by ``telemetry.metrics.serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# Spend is counted in micro-dollars (integers, exact); dashboards divide by 1e6 for USD.
SPEND_USD_MICROS = Counter(
    "vi_costs_spend_usd_micros_total",
    "Spend newly recorded in the ledger, integer micro-dollars (divide by 1e6 for USD)",
    ["customer_id", "stage"],
)
EVENTS = Counter("vi_costs_events_total", "Cost events recorded in the ledger for the first time")
DUPLICATES = Counter(
    "vi_costs_duplicates_dropped_total", "Cost events already in the ledger, so not counted again"
)
UNDECODABLE = Counter("vi_costs_undecodable_total", "Cost events skipped as undecodable")
BUDGET_CROSSINGS = Counter(
    "vi_costs_budget_crossings_total", "Budget thresholds crossed", ["threshold"]
)
LAG = Gauge(
    "vi_costs_consumer_lag_messages",
    "Messages behind the high watermark after the last batch, per partition",
    ["topic", "partition"],
)
