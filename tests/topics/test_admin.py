"""``topics.admin`` against the real broker and registry: apply converges, then changes nothing."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas.codec import Codec
from tests.fixtures.kafka import unique_topic
from topics.admin import apply, describe, ensure_topics
from topics.catalogue import DAY_MS, TopicSpec, catalogue
from vidinsight.errors import Reason, TransientError

pytestmark = pytest.mark.integration


def _specs() -> list[TopicSpec]:
    """A small catalogue of its own, so the test never fights the real one."""
    return [
        TopicSpec(name=unique_topic("requested"), partitions=3, replication_factor=1,
                  value_schema="JobRequested"),
        TopicSpec(name=unique_topic("costs"), partitions=2, replication_factor=1,
                  value_schema="CostEvent", key="customer_id", retention_ms=30 * DAY_MS),
        TopicSpec(name=unique_topic("dlq"), partitions=1, replication_factor=1,
                  value_schema="DeadLetter", config_overrides=(("max.message.bytes", "2097152"),)),
    ]  # fmt: skip


def test_apply_creates_everything_then_a_second_run_changes_nothing(
    kafka_admin: AdminClient, codec: Codec
) -> None:
    specs = _specs()

    first = apply(kafka_admin, codec.registry, specs)
    second = apply(kafka_admin, codec.registry, specs)

    assert {(c.target, c.action) for c in first} == (
        {(s.name, "created topic") for s in specs}
        | {(s.value_subject, "registered schema") for s in specs}
        | {(s.value_subject, "set compatibility") for s in specs}
    )
    assert second == []
    assert all(row.in_sync for row in describe(kafka_admin, specs))
    for spec in specs:
        assert codec.registry.get_compatibility(spec.value_subject) == "BACKWARD"


def test_apply_raises_partitions_and_fixes_drifted_config_but_never_lowers(
    kafka_admin: AdminClient, codec: Codec, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _specs()[0]
    apply(kafka_admin, codec.registry, [spec])
    grown = TopicSpec(name=spec.name, partitions=5, replication_factor=1,
                      value_schema=spec.value_schema, retention_ms=2 * DAY_MS)  # fmt: skip

    changes = apply(kafka_admin, codec.registry, [grown])

    assert [(c.action, c.detail) for c in changes] == [
        ("added partitions", "3 -> 5"),
        ("set config", f"retention.ms={2 * DAY_MS} (was {7 * DAY_MS})"),
    ]
    [row] = describe(kafka_admin, [grown])
    assert row.in_sync and row.partitions_actual == 5

    shrunk = TopicSpec(name=spec.name, partitions=2, replication_factor=1,
                       value_schema=spec.value_schema, retention_ms=2 * DAY_MS)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="topics.admin"):
        assert apply(kafka_admin, codec.registry, [shrunk]) == []
    assert "never lowered" in caplog.text
    [row] = describe(kafka_admin, [shrunk])
    assert row.partitions_actual == 5 and not row.in_sync


def test_describe_reports_missing_topics_and_drift(
    kafka_admin: AdminClient, kafka_bootstrap: str
) -> None:
    spec = _specs()[1]
    [missing] = describe(kafka_admin, [spec])
    assert not missing.exists and missing.partitions_actual is None

    ensure_topics(kafka_bootstrap, [spec])
    drifted = TopicSpec(name=spec.name, partitions=2, replication_factor=1,
                        value_schema="CostEvent", cleanup_policy="compact")  # fmt: skip
    [row] = describe(kafka_admin, [drifted])

    assert row.exists and row.partitions_actual == 2
    assert ("cleanup.policy", "compact", "delete") in row.config_drift
    assert not row.in_sync


def test_the_real_catalogue_applies_and_is_then_idempotent(
    kafka_admin: AdminClient, registry_client: SchemaRegistryClient
) -> None:
    specs = catalogue()
    apply(kafka_admin, registry_client, specs)  # may or may not change things: shared stack

    assert apply(kafka_admin, registry_client, specs) == []
    assert all(row.in_sync for row in describe(kafka_admin, specs))


def test_an_unreachable_broker_is_a_transient_broker_unavailable() -> None:
    spec = _specs()[0]
    with pytest.raises(TransientError) as caught:
        ensure_topics("127.0.0.1:1", [spec])  # nothing listens on port 1
    assert caught.value.reason is Reason.BROKER_UNAVAILABLE
