"""Load shedding at the door: the per-customer quota (429) and pipeline backpressure (503)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from sinks.customers import set_budget
from sinks.db import Pool, transaction
from tests.fixtures.costs import spend
from tests.fixtures.kafka import produce_to
from tests.gateway.conftest import Customer, GatewayFactory, make_jobs_topic
from vidinsight.settings import Settings

BODY = {"source_url": "https://example.com/a.mp4"}


def test_quota_of_jobs_in_flight_is_429_with_retry_after(
    gateway_factory: GatewayFactory, customer: Customer, other_customer: Customer
) -> None:
    gateway = gateway_factory(gateway_max_jobs_in_flight=2, gateway_quota_retry_after_seconds=7)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    with gateway.client(customer) as client:
        first = client.post("/v1/jobs", json=BODY, headers=key)
        second = client.post("/v1/jobs", json=BODY)
        refused = client.post("/v1/jobs", json=BODY)
        replay = client.post("/v1/jobs", json=BODY, headers=key)
        client.delete(f"/v1/jobs/{second.json()['job_id']}")
        after_cancel = client.post("/v1/jobs", json=BODY)
        listed = client.get("/v1/jobs").json()["jobs"]
    with gateway.client(other_customer) as client:
        someone_else = client.post("/v1/jobs", json=BODY)
    assert first.status_code == second.status_code == 202
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert refused.json()["error"]["reason"] == "quota_exceeded"
    assert replay.status_code == 202 and replay.json() == first.json()
    assert after_cancel.status_code == 202
    assert len(listed) == 3  # the refused submission left no row
    assert someone_else.status_code == 202


def test_consumer_lag_beyond_the_bound_is_503_until_the_stage_catches_up(
    gateway_factory: GatewayFactory, customer: Customer, settings: Settings
) -> None:
    topic = make_jobs_topic(settings)
    group = f"test.ingest.{uuid.uuid4().hex}"
    for n in range(3):
        produce_to(settings.kafka_bootstrap, topic, b"backlog", key=f"k{n}")
    gateway = gateway_factory(
        gateway_jobs_topic=topic,
        gateway_lag_group=group,
        gateway_max_ingest_lag_messages=2,
        gateway_lag_cache_seconds=0.2,
        gateway_backpressure_retry_after_seconds=11,
    )
    gateway.wait_lag(lambda lag: lag == 3)  # the backlog is measured
    with gateway.client(customer) as client:
        shed = client.post("/v1/jobs", json=BODY)
        assert shed.status_code == 503, shed.text
        assert shed.headers["retry-after"] == "11"
        assert shed.json()["error"]["reason"] == "overloaded"
        assert client.get("/v1/jobs").json()["jobs"] == []

        _commit(settings, group, topic, offset=3)  # the first stage caught up
        gateway.wait_lag(lambda lag: lag == 0)
        accepted = client.post("/v1/jobs", json=BODY)
    assert accepted.status_code == 202, accepted.text


def _commit(settings: Settings, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def test_spent_monthly_budget_is_402(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool
) -> None:
    gateway = gateway_factory()
    with gateway.client(customer) as client:
        client.post("/v1/jobs", json=BODY)  # a job this month, before the budget is spent
    with transaction(db_pool) as conn:
        set_budget(conn, customer.customer_id, 1_000_000)
        spend(conn, customer.customer_id, 1_000_000)
    with gateway.client(customer) as client:
        refused = client.post("/v1/jobs", json=BODY)
    assert refused.status_code == 402
    assert refused.json()["error"]["reason"] == "budget_exceeded"
    with transaction(db_pool) as conn:
        set_budget(conn, customer.customer_id, 2_000_000)
    with gateway.client(customer) as client:
        assert client.post("/v1/jobs", json=BODY).status_code == 202
