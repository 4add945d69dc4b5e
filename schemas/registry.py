"""The schema registry edge: one way to build a client, and one translation of its failures.

confluent-kafka's client raises ``httpx.TransportError`` when the registry cannot be
reached and ``SchemaRegistryError`` (with the HTTP status) when it answers with an
error; serializers may wrap either in ``SerializationError``. The platform needs one
distinction only: is the registry down (retry later, the message is fine) or did it
reject this schema or id (retrying will not help). That decision is made here, once.
"""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

# The HTTP library the client really uses (httpx2 where installed, else httpx): its
# TransportError is what an unreachable registry raises.
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError

from vidinsight.errors import PermanentError, Reason, TransientError, VidinsightError
from vidinsight.settings import get_settings

# Statuses that say "the registry is unwell or overloaded", not "your request is wrong".
# 401/403 are the operator's credentials, not the message's fault: retry until fixed.
_TRANSIENT_STATUSES = frozenset({401, 403, 408, 429})

# Compatibility level every platform subject gets; Apicurio's default is NONE.
BACKWARD = "BACKWARD"


def registry_client(registry_url: str) -> SchemaRegistryClient:
    """A client with short timeouts and few retries, so an outage surfaces in seconds.

    The stage runtime does its own backoff; the library's default of several retries
    spaced a second apart would only hide an outage inside one call.
    """
    settings = get_settings()
    return SchemaRegistryClient(
        {
            "url": registry_url,
            "timeout": settings.registry_timeout_seconds,
            "max.retries": settings.registry_max_retries,
            "retries.wait.ms": 200,
            "retries.max.wait.ms": 2_000,
        }
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps, outermost first (cycles cut)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def registry_fault(exc: BaseException) -> SchemaRegistryError | httpx.TransportError | None:
    """The registry failure buried in ``exc``, if any (it may be wrapped more than once)."""
    for cause in _causes(exc):
        if isinstance(cause, SchemaRegistryError | httpx.TransportError):
            return cause
    return None


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is the registry answering 404 (unknown subject, version or id)."""
    fault = registry_fault(exc)
    return isinstance(fault, SchemaRegistryError) and fault.http_status_code == 404


def translate(exc: BaseException, what: str, rejected: Reason) -> VidinsightError:
    """The catalogue error for a failure while doing ``what`` with the registry.

    Unreachable, 5xx, 408, 429, 401 and 403 are transient (``registry_unavailable``);
    any other registry answer, and any non-registry failure, is a permanent rejection
    with reason ``rejected``.
    """
    if isinstance(exc, VidinsightError):
        return exc
    fault = registry_fault(exc)
    if isinstance(fault, httpx.TransportError):
        return TransientError(
            Reason.REGISTRY_UNAVAILABLE,
            f"{what}: schema registry unreachable ({type(fault).__name__}: {fault})",
        )
    if isinstance(fault, SchemaRegistryError):
        status = fault.http_status_code
        if status >= 500 or status in _TRANSIENT_STATUSES:
            return TransientError(
                Reason.REGISTRY_UNAVAILABLE, f"{what}: schema registry answered {status}: {fault}"
            )
        return PermanentError(rejected, f"{what}: schema registry rejected it: {fault}")
    return PermanentError(rejected, f"{what}: {type(exc).__name__}: {exc}")


def is_registered(client: SchemaRegistryClient, subject: str, schema_text: str) -> bool:
    """Whether exactly this schema is already a version of ``subject``."""
    try:
        client.lookup_schema(subject, Schema(schema_text, "AVRO"))
    except Exception as exc:
        if is_not_found(exc):
            return False
        raise translate(exc, f"look up schema in {subject}", Reason.INVALID_SCHEMA) from exc
    return True


def register(client: SchemaRegistryClient, subject: str, schema_text: str) -> int:
    """Register ``schema_text`` under ``subject``; its schema id (the same if already there).

    An incompatible change is refused by the registry (409) and surfaces as
    ``PermanentError(invalid_schema)``: the schema file, not the registry, needs fixing.
    """
    try:
        return client.register_schema(subject, Schema(schema_text, "AVRO"))
    except Exception as exc:
        raise translate(exc, f"register schema in {subject}", Reason.INVALID_SCHEMA) from exc


def compatibility(client: SchemaRegistryClient, subject: str) -> str | None:
    """The compatibility level set on ``subject`` itself; None when it has none of its own."""
    try:
        return client.get_compatibility(subject)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, f"read compatibility of {subject}", Reason.INVALID_SCHEMA) from exc


def set_compatibility(client: SchemaRegistryClient, subject: str, level: str) -> None:
    """Set ``subject``'s compatibility level (PUT /config/<subject>)."""
    try:
        client.set_compatibility(subject, level)
    except Exception as exc:
        raise translate(exc, f"set compatibility of {subject}", Reason.INVALID_SCHEMA) from exc


def has_subject(client: SchemaRegistryClient, subject: str) -> bool:
    """Whether ``subject`` has at least one schema version."""
    try:
        return bool(client.get_versions(subject))
    except Exception as exc:
        if is_not_found(exc):
            return False
        raise translate(exc, f"list versions of {subject}", Reason.INVALID_SCHEMA) from exc
