"""Make the cluster and the schema registry match the topic catalogue.

``apply`` is safe to run at every deploy: it only creates what is missing, raises
partition counts (Kafka cannot lower them, and re-keying a live topic would break
per-job ordering, so a surplus is reported, never "fixed"), corrects drifted configs
with incremental alters (other configs an operator set are left alone), registers each
value schema and pins its subject to BACKWARD compatibility. A second run changes nothing.
Kafka failures are translated here, once, into the error catalogue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import registry as schema_registry
from schemas.codec import load_schema
from topics.catalogue import TopicSpec
from vidinsight.errors import PermanentError, Reason, TransientError, VidinsightError
from vidinsight.settings import get_settings

log = logging.getLogger(__name__)

# Codes that mean "the cluster is not reachable or not ready", whatever retriable() says.
_UNAVAILABLE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_CONTROLLER,
    }
)


@dataclass(frozen=True)
class Change:
    """One thing ``apply`` changed, for the operator to read."""

    target: str  # a topic or a registry subject
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.target}: {self.action} ({self.detail})"


@dataclass(frozen=True)
class TopicState:
    """The catalogue's view of one topic next to the cluster's, for ``topics list``."""

    name: str
    exists: bool
    partitions_wanted: int
    partitions_actual: int | None
    replication_wanted: int
    replication_actual: int | None
    # (config name, wanted value, value on the cluster) for every config that differs.
    config_drift: tuple[tuple[str, str, str | None], ...]

    @property
    def in_sync(self) -> bool:
        """Whether the cluster holds this topic exactly as the catalogue wants it."""
        return (
            self.exists
            and self.partitions_actual == self.partitions_wanted
            and self.replication_actual == self.replication_wanted
            and not self.config_drift
        )


# librdkafka's own log lines (connection refused, retries) go through Python logging
# under this name instead of straight to stderr; failures reach callers as exceptions.
RDKAFKA_LOGGER = logging.getLogger("topics.admin.rdkafka")


def admin_client(bootstrap: str) -> AdminClient:
    """An AdminClient for ``bootstrap`` that logs through ``RDKAFKA_LOGGER``."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOGGER}
    return AdminClient(config)


def offsets_reader(bootstrap: str, group: str, client_id: str) -> Consumer:
    """A consumer that carries ``group``'s id but never subscribes: it reads the group's
    committed offsets (``committed()``) without ever joining, so nothing rebalances.

    Not the AdminClient: librdkafka 2.16's ListConsumerGroupOffsets crashes the process
    (SIGSEGV in rd_kafka_cgrp_op) while the broker's offsets coordinator is still
    loading, as on a fresh cluster; the consumer's own offset fetch handles that answer.
    """
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "client.id": client_id,
            "logger": RDKAFKA_LOGGER,
        }
    )


def kafka_error(exc: BaseException, what: str) -> VidinsightError:
    """The catalogue error for a Kafka admin failure while doing ``what``."""
    if isinstance(exc, VidinsightError):
        return exc
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        if error.retriable() or error.code() in _UNAVAILABLE_CODES:
            return TransientError(Reason.BROKER_UNAVAILABLE, f"{what}: {error.str()}")
        return PermanentError(Reason.INVALID_TOPIC_CONFIG, f"{what}: {error.str()}")
    if isinstance(exc, TimeoutError):
        return TransientError(Reason.BROKER_UNAVAILABLE, f"{what}: no answer from the broker")
    return PermanentError(Reason.INVALID_TOPIC_CONFIG, f"{what}: {type(exc).__name__}: {exc}")


def _timeout() -> float:
    return get_settings().admin_timeout_seconds


def _wait(future: Future[Any], what: str) -> Any:
    """The result of an admin future, with failures translated."""
    try:
        return future.result(timeout=_timeout())
    except Exception as exc:
        raise kafka_error(exc, what) from exc


def _metadata(admin: AdminClient) -> ClusterMetadata:
    """Cluster metadata; TransientError(broker_unavailable) when the broker cannot be reached."""
    try:
        return admin.list_topics(timeout=_timeout())
    except Exception as exc:
        raise kafka_error(exc, "read cluster metadata") from exc


def _topic_configs(admin: AdminClient, names: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """The current configs of ``names``, as {topic: {config: value}}."""
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=_timeout())
    current: dict[str, dict[str, str | None]] = {}
    for resource, future in futures.items():
        entries: dict[str, ConfigEntry] = _wait(future, f"describe configs of {resource.name}")
        current[resource.name] = {name: entry.value for name, entry in entries.items()}
    return current


def _drift(
    spec: TopicSpec, current: dict[str, str | None]
) -> tuple[tuple[str, str, str | None], ...]:
    """Every config the catalogue sets that the cluster holds differently."""
    return tuple(
        (name, wanted, current.get(name))
        for name, wanted in sorted(spec.configs().items())
        if current.get(name) != wanted
    )


def _create_missing(admin: AdminClient, specs: Sequence[TopicSpec]) -> list[Change]:
    """Create ``specs`` (none of which exist yet); a topic someone else just made is fine."""
    if not specs:
        return []
    new_topics = [
        NewTopic(s.name, s.partitions, s.replication_factor, config=s.configs()) for s in specs
    ]
    futures = admin.create_topics(new_topics, request_timeout=_timeout())
    changes = []
    for spec in specs:
        try:
            futures[spec.name].result(timeout=_timeout())
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise kafka_error(exc, f"create topic {spec.name}") from exc
        except Exception as exc:
            raise kafka_error(exc, f"create topic {spec.name}") from exc
        detail = f"{spec.partitions} partitions, replication {spec.replication_factor}"
        changes.append(Change(spec.name, "created topic", detail))
    return changes


def _raise_partitions(admin: AdminClient, spec: TopicSpec, actual: int) -> list[Change]:
    """Add partitions up to the catalogue's count; warn about (never remove) a surplus."""
    if actual > spec.partitions:
        log.warning(
            "%s has %d partitions, the catalogue wants %d; partitions are never lowered",
            spec.name,
            actual,
            spec.partitions,
        )
        return []
    if actual == spec.partitions:
        return []
    future = admin.create_partitions(
        [NewPartitions(spec.name, spec.partitions)], request_timeout=_timeout()
    )[spec.name]
    _wait(future, f"add partitions to {spec.name}")
    return [Change(spec.name, "added partitions", f"{actual} -> {spec.partitions}")]


def _reconcile_configs(
    admin: AdminClient, spec: TopicSpec, current: dict[str, str | None]
) -> list[Change]:
    """Set every drifted config with one incremental alter (other configs are untouched)."""
    drift = _drift(spec, current)
    if not drift:
        return []
    entries = [
        ConfigEntry(name, wanted, incremental_operation=AlterConfigOpType.SET)
        for name, wanted, _ in drift
    ]
    resource = ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries)
    future = admin.incremental_alter_configs([resource], request_timeout=_timeout())[resource]
    _wait(future, f"alter configs of {spec.name}")
    return [
        Change(spec.name, "set config", f"{name}={wanted} (was {was})")
        for name, wanted, was in drift
    ]


def _wait_until_ready(admin: AdminClient, names: Sequence[str]) -> None:
    """Block until every partition of ``names`` has a leader, so producers can write at once."""
    deadline = time.monotonic() + _timeout()
    while names:
        metadata = _metadata(admin)
        pending = [
            name
            for name in names
            if name not in metadata.topics
            or metadata.topics[name].error is not None
            or not metadata.topics[name].partitions
            or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TransientError(
                Reason.BROKER_UNAVAILABLE, f"topics have no leader yet: {', '.join(pending)}"
            )
        time.sleep(0.1)


def apply_topics(admin: AdminClient, specs: Sequence[TopicSpec]) -> list[Change]:
    """Create, grow and reconfigure topics to match ``specs``; the changes made."""
    metadata = _metadata(admin)
    missing = [s for s in specs if s.name not in metadata.topics]
    existing = [s for s in specs if s.name in metadata.topics]
    changes = _create_missing(admin, missing)
    current_configs = _topic_configs(admin, [s.name for s in existing])
    for spec in existing:
        partitions = metadata.topics[spec.name].partitions
        _warn_on_replication(spec, partitions)
        changes += _raise_partitions(admin, spec, len(partitions))
        changes += _reconcile_configs(admin, spec, current_configs[spec.name])
    _wait_until_ready(admin, [s.name for s in specs])
    return changes


def _warn_on_replication(spec: TopicSpec, partitions: dict[int, Any]) -> None:
    """Replication cannot be changed by an admin call (it needs a reassignment): report it."""
    actual = _replication_of(partitions)
    if actual is not None and actual != spec.replication_factor:
        log.warning(
            "%s has replication %d, the catalogue wants %d; reassign partitions to change it",
            spec.name,
            actual,
            spec.replication_factor,
        )


def _replication_of(partitions: dict[int, Any]) -> int | None:
    """A topic's replication factor as seen in metadata (that of its first partition)."""
    if not partitions:
        return None
    return len(partitions[min(partitions)].replicas)


def apply_schemas(registry: SchemaRegistryClient, specs: Sequence[TopicSpec]) -> list[Change]:
    """Register each topic's value schema and pin its subject to BACKWARD; the changes made.

    On a subject that exists, compatibility is set before registering, so a new schema
    version is checked against the old one; a new subject gets its first version first.
    """
    changes: list[Change] = []
    for spec in specs:
        subject = spec.value_subject
        if schema_registry.has_subject(registry, subject):
            changes += _pin_backward(registry, subject)
            changes += _register(registry, subject, spec.value_schema)
        else:
            changes += _register(registry, subject, spec.value_schema)
            changes += _pin_backward(registry, subject)
    return changes


def _register(registry: SchemaRegistryClient, subject: str, schema_name: str) -> list[Change]:
    text = load_schema(schema_name)
    if schema_registry.is_registered(registry, subject, text):
        return []
    schema_id = schema_registry.register(registry, subject, text)
    return [Change(subject, "registered schema", f"{schema_name}, id {schema_id}")]


def _pin_backward(registry: SchemaRegistryClient, subject: str) -> list[Change]:
    level = schema_registry.compatibility(registry, subject)
    if level == schema_registry.BACKWARD:
        return []
    schema_registry.set_compatibility(registry, subject, schema_registry.BACKWARD)
    return [Change(subject, "set compatibility", f"{schema_registry.BACKWARD} (was {level})")]


def apply(
    admin: AdminClient, registry: SchemaRegistryClient, specs: Sequence[TopicSpec]
) -> list[Change]:
    """Make the cluster and the registry match ``specs``; every change made, in order."""
    return apply_topics(admin, specs) + apply_schemas(registry, specs)


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec]) -> list[Change]:
    """Create or reconcile ``specs`` on the cluster at ``bootstrap`` (no registry work).

    For tests and tools that need their own topics ready to write before they start.
    """
    return apply_topics(admin_client(bootstrap), specs)


def describe(admin: AdminClient, specs: Sequence[TopicSpec]) -> list[TopicState]:
    """The catalogue next to the cluster, one row per topic, in catalogue order."""
    metadata = _metadata(admin)
    existing = [s.name for s in specs if s.name in metadata.topics]
    configs = _topic_configs(admin, existing)
    rows = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        rows.append(
            TopicState(
                name=spec.name,
                exists=topic is not None,
                partitions_wanted=spec.partitions,
                partitions_actual=len(topic.partitions) if topic is not None else None,
                replication_wanted=spec.replication_factor,
                replication_actual=_replication_of(topic.partitions) if topic is not None else None,
                config_drift=_drift(spec, configs[spec.name]) if topic is not None else (),
            )
        )
    return rows
