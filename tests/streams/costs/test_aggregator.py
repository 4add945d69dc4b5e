"""The cost aggregator, a real Faust app over aiokafka against the local Kafka 4.1 broker.

Every test runs ``vidinsight costs-aggregator`` as a subprocess and checks PostgreSQL,
the record customers are billed from.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka import Consumer

from sinks.budgets import is_over_budget
from sinks.customers import create_customer
from tests.fixtures.kafka import produce_to
from tests.fixtures.network import TcpRelay
from tests.streams.costs.harness import (
    CostsHarness,
    assert_spend_tables_sum_to_ledger,
    cost_event,
    metric,
)

STAGES = ("transcribe", "analyse", "synthesise")


def _events(customers: list[str], jobs_per_customer: int, per_job: int) -> list[dict[str, object]]:
    """Events with amounts known to the test, spread over customers, jobs and stages."""
    rng = random.Random(7)
    events = []
    for customer in customers:
        for j in range(jobs_per_customer):
            job = f"job-{uuid.uuid4().hex[:10]}-{j}"
            for i in range(per_job):
                events.append(cost_event(customer, job, STAGES[i % 3], rng.randint(1, 5_000)))
    return events


def _expected(events: list[dict[str, object]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for e in events:
        customer = str(e["customer_id"])
        totals[customer] = totals.get(customer, 0) + int(str(e["amount_usd_micros"]))
    return totals


def test_each_event_sent_twice_is_counted_once(costs: CostsHarness) -> None:
    customers = [f"cus-dup-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    events = _events(customers, jobs_per_customer=2, per_job=20)
    aggregator, port = costs.start()
    costs.send(events)
    produce_to(costs.settings.kafka_bootstrap, costs.costs_topic, b"not avro", key=customers[0])
    costs.send(events)  # every event again: same ids, new Kafka messages
    costs.wait_until(
        lambda: metric(port, "vidinsight_costs_duplicates_dropped_total") >= len(events),
        "every repeat seen by the aggregator",
    )
    assert costs.ledger_count(customers) == len(events)
    assert costs.ledger(customers) == _expected(events)
    assert metric(port, "vidinsight_costs_events_total") == len(events)
    assert metric(port, "vidinsight_costs_duplicates_dropped_total") == len(events)
    spend = metric(port, "vidinsight_costs_spend_usd_micros_total")
    assert spend == sum(_expected(events).values())
    assert metric(port, "vidinsight_costs_undecodable_total") == 1  # skipped, not blocking
    assert metric(port, "vidinsight_costs_consumer_lag_messages") == 0
    assert [line for line in aggregator.log_lines() if "unparsed" in line] == []  # JSON only
    assert_spend_tables_sum_to_ledger(costs.pool, customers)


def test_sigkill_mid_stream_and_restart_leaves_every_total_unchanged(costs: CostsHarness) -> None:
    customers = [f"cus-kill-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    events = _events(customers, jobs_per_customer=5, per_job=100)  # 2000 events
    costs.send(events)
    # Small batches committed once a second: the kill lands between records and commits.
    small = {"VI_COSTS_BATCH_MAX_EVENTS": "10", "VI_COSTS_COMMIT_INTERVAL_SECONDS": "1"}
    first, _ = costs.start(**small)
    costs.wait_until(lambda: costs.ledger_count(customers) >= 300, "some events recorded")
    first.kill()
    recorded_at_kill = costs.ledger_count(customers)
    assert recorded_at_kill < len(events), "the kill should land mid-stream"
    costs.send(events[:200])  # and a producer that retried some, meanwhile
    second, port = costs.start()
    costs.wait_until(lambda: costs.ledger_count(customers) == len(events), "all events recorded")
    costs.wait_until(
        lambda: metric(port, "vidinsight_costs_duplicates_dropped_total") >= 200, "the resent ones"
    )
    assert costs.ledger(customers) == _expected(events)
    assert costs.ledger_count(customers) == len(events)
    assert_spend_tables_sum_to_ledger(costs.pool, customers)
    assert second.terminate(60) == 0  # SIGTERM: a clean stop


def test_crossing_a_budget_records_it_once_emits_budget_events_and_answers_over_budget(
    costs: CostsHarness,
) -> None:
    with costs.pool.connection() as conn:
        customer, _key = create_customer(
            conn, f"budget-{uuid.uuid4().hex[:6]}", monthly_budget_usd_micros=1_000_000
        )
    job = f"job-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    costs.start()
    costs.send([cost_event(customer, job, "analyse", 799_999)])
    costs.wait_until(lambda: costs.ledger(customer_ids=[customer]) != {}, "first event recorded")
    assert _budget_rows(costs, customer) == []
    costs.send([cost_event(customer, job, "analyse", 1)])  # exactly 80%
    costs.wait_until(lambda: _budget_rows(costs, customer) == ["80pct"], "80% recorded")
    with costs.pool.connection() as conn:
        assert not is_over_budget(conn, customer, now)
    costs.send([cost_event(customer, job, "transcribe", 200_000)])  # exactly 100%
    costs.wait_until(
        lambda: _over_budget(costs, customer, now), "the over-budget check answers yes", 10
    )
    costs.send([cost_event(customer, job, "transcribe", 5) for _ in range(3)])  # beyond
    costs.wait_until(lambda: costs.ledger([customer]) == {customer: 1_000_015}, "all recorded")
    assert _budget_rows(costs, customer) == ["100pct", "80pct"]
    assert _budget_events(costs, customer) == [
        ("warn", 800_000, 1_000_000),
        ("exceeded", 1_000_000, 1_000_000),
    ]


def _budget_rows(costs: CostsHarness, customer: str) -> list[str]:
    with costs.pool.connection() as conn:
        rows = conn.execute(
            "SELECT threshold FROM budget_events WHERE customer_id = %s ORDER BY threshold",
            (customer,),
        ).fetchall()
    return [r["threshold"] for r in rows]


def _over_budget(costs: CostsHarness, customer: str, now: datetime) -> bool:
    with costs.pool.connection() as conn:
        return is_over_budget(conn, customer, now)


def _budget_events(costs: CostsHarness, customer: str) -> list[tuple[str, int, int]]:
    """The BudgetEvents on the budget topic for this customer, decoded, in order."""
    consumer = Consumer(
        {
            "bootstrap.servers": costs.settings.kafka_bootstrap,
            "group.id": f"test.{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([costs.budgets_topic])
    found: list[tuple[str, int, int]] = []
    try:
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is None:
                if len(found) >= 2:
                    break
                continue
            record = costs.codec.decode(costs.budgets_topic, message.value())
            if record["customer_id"] == customer:
                found.append(
                    (record["threshold"], record["spend_usd_micros"], record["budget_usd_micros"])
                )
    finally:
        consumer.close()
    return found


def test_postgres_unreachable_mid_stream_loses_and_doubles_nothing(costs: CostsHarness) -> None:
    database = urlsplit(costs.settings.database_url)
    relay = TcpRelay(database.hostname or "127.0.0.1", database.port or 5432)
    url = database._replace(
        netloc=f"{database.username}:{database.password}@127.0.0.1:{relay.port}"
    )
    customers = [f"cus-pgdown-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    events = _events(customers, jobs_per_customer=2, per_job=50)
    try:
        costs.start(VI_DATABASE_URL=urlunsplit(url), VI_DB_POOL_TIMEOUT_SECONDS="1")
        costs.send(events[:100])
        costs.wait_until(lambda: costs.ledger_count(customers) == 100, "first half recorded")
        relay.cut()
        costs.send(events[100:] + events[:50])  # the second half, and some repeats
        time.sleep(4)  # batches fail and are retried meanwhile
        assert costs.ledger_count(customers) == 100
        relay.restore()
        costs.wait_until(lambda: costs.ledger_count(customers) == len(events), "all recorded")
    finally:
        relay.cut()
    assert costs.ledger(customers) == _expected(events)
    assert_spend_tables_sum_to_ledger(costs.pool, customers)
    retried = [
        line
        for line in costs.workers[0].log_lines()
        if line.get("msg", "").startswith("batch not recorded, retrying")
    ]
    assert retried and all(line["reason"] == "database_unavailable" for line in retried)
