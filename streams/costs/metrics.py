"""Prometheus metrics of the cost aggregator (served by ``telemetry.metrics.serve``).

Names share the ``vidinsight_`` prefix of every other process, so one dashboard and one
rule file select them all.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# Spend is counted in micro-dollars (integers, exact); dashboards divide by 1e6 for USD.
# Labelled like the ledger (customer, stage, provider, model) so the cost dashboard can
# break spend down each way without querying PostgreSQL.
SPEND_USD_MICROS = Counter(
    "vidinsight_costs_spend_usd_micros_total",
    "Spend newly recorded in the ledger, integer micro-dollars (divide by 1e6 for USD)",
    ["customer_id", "stage", "provider", "model"],
)
EVENTS = Counter(
    "vidinsight_costs_events_total", "Cost events recorded in the ledger for the first time"
)
DUPLICATES = Counter(
    "vidinsight_costs_duplicates_dropped_total",
    "Cost events already in the ledger, so not counted again",
)
UNDECODABLE = Counter("vidinsight_costs_undecodable_total", "Cost events skipped as undecodable")
BUDGET_CROSSINGS = Counter(
    "vidinsight_costs_budget_crossings_total",
    "Monthly budget thresholds crossed, by customer and threshold",
    ["customer_id", "threshold"],
)
# The counter above appears at 1 on a customer's first crossing, which increase() cannot
# see; alerts read when each threshold was last crossed instead.
BUDGET_LAST_CROSSED = Gauge(
    "vidinsight_costs_budget_last_crossed_timestamp_seconds",
    "Unix time a customer's monthly spend last crossed a budget threshold",
    ["customer_id", "threshold"],
)
LAG = Gauge(
    "vidinsight_costs_consumer_lag_messages",
    "Messages behind the high watermark after the last batch, per partition",
    ["topic", "partition"],
)
