"""The one catalogue of reason codes and the error classes the stage runtime acts on.

Every failure the platform reports carries a ``Reason``; every exception a stage or
an adapter raises on purpose is a ``VidinsightError`` whose class tells the runtime
what to do: retry forever with backoff (transient), dead-letter at once (permanent),
or retry a bounded number of times (unknown, for anything not raised on purpose).
Adapters translate library exceptions into these once, at the edge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any


class ErrorClass(StrEnum):
    """How the runtime treats a failure."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Reason codes: stable strings stored in PostgreSQL, DLQ headers, logs and API errors."""

    # Infrastructure (transient).
    DATABASE_UNAVAILABLE = "database_unavailable"
    BROKER_UNAVAILABLE = "broker_unavailable"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    BLOB_STORE_UNAVAILABLE = "blob_store_unavailable"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    TIMEOUT = "timeout"
    # The message itself (permanent).
    UNDECODABLE_MESSAGE = "undecodable_message"
    INVALID_SCHEMA = "invalid_schema"
    INVALID_REQUEST = "invalid_request"
    EMPTY_MEDIA = "empty_media"
    NOT_MEDIA = "not_media"
    CORRUPT_MEDIA = "corrupt_media"
    NO_STREAMS = "no_streams"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    # A video picture (declared by its stream, or decoded) of more pixels than
    # VI_MAX_PICTURE_PIXELS.
    PICTURE_TOO_LARGE = "picture_too_large"
    SOURCE_FORBIDDEN = "source_forbidden"
    SOURCE_UNREACHABLE = "source_unreachable"
    INVALID_LLM_OUTPUT = "invalid_llm_output"
    # The provider refused our credentials, or none are configured: an operator must act
    # (set or rotate the key), then replay; retrying alone would never succeed.
    PROVIDER_AUTH_FAILED = "provider_auth_failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    JOB_CANCELLED = "job_cancelled"
    # A handler ran past its deadline (the runtime's watchdog, or a blocking call that was
    # given only the time that remained).
    STAGE_TIMEOUT = "stage_timeout"
    # What the runtime could not store or produce for one message: PostgreSQL refused its
    # values (a NUL byte), the broker refused the record (too large, invalid), or an output
    # could not be encoded.
    UNSTORABLE_MESSAGE = "unstorable_message"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNDELIVERABLE_MESSAGE = "undeliverable_message"
    # Retries exhausted for a fault nobody classified.
    RETRIES_EXHAUSTED = "retries_exhausted"
    UNEXPECTED_ERROR = "unexpected_error"
    # Operational signals (logs and metrics, not job failures).
    PARTITION_STALLED = "partition_stalled"
    # Platform configuration and local stack.
    PORT_IN_USE = "port_in_use"
    MISSING_TOOL = "missing_tool"
    DISK_FULL = "disk_full"
    # The broker rejected a topic definition from the catalogue (bad config, policy).
    INVALID_TOPIC_CONFIG = "invalid_topic_config"
    # Gateway.
    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    QUOTA_EXCEEDED = "quota_exceeded"
    OVERLOADED = "overloaded"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    JOB_NOT_COMPLETED = "job_not_completed"
    # The customer's uploads (held or being received) would pass their count or byte
    # quota (VI_UPLOAD_MAX_*_PER_CUSTOMER or the customer's own): 413, waiting alone
    # frees nothing; delete uploads or ask for a larger quota.
    UPLOAD_QUOTA_EXCEEDED = "upload_quota_exceeded"
    # DELETE of an upload a queued or running job still reads.
    UPLOAD_IN_USE = "upload_in_use"
    # A request body over its route's limit (JSON routes: VI_GATEWAY_MAX_JSON_BYTES).
    BODY_TOO_LARGE = "body_too_large"
    # A customer already holds VI_GATEWAY_SSE_MAX_STREAMS_PER_CUSTOMER event streams.
    TOO_MANY_STREAMS = "too_many_streams"


class VidinsightError(Exception):
    """Base of every error raised on purpose; carries its reason and its class."""

    error_class: ErrorClass = ErrorClass.UNKNOWN

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class TransientError(VidinsightError):
    """A dependency is down or slow; the same message will succeed later."""

    error_class = ErrorClass.TRANSIENT


class PermanentError(VidinsightError):
    """The message itself cannot be processed; retrying will not help."""

    error_class = ErrorClass.PERMANENT


class StageTimeout(VidinsightError):
    """The work ran past its deadline: retried within the unknown-fault bound, then parked.

    Not transient (a hostile file or a dripping server hangs every time) and not
    permanent (a busy machine may finish next time), so it is bounded like an unknown fault.
    """

    error_class = ErrorClass.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(Reason.STAGE_TIMEOUT, message)


class JobCancelled(VidinsightError):
    """The customer cancelled the job: the message ends ``cancelled``, not dead-lettered."""

    error_class = ErrorClass.PERMANENT

    def __init__(self, job_id: str) -> None:
        super().__init__(Reason.JOB_CANCELLED, f"job {job_id} was cancelled")


def remaining_seconds(deadline: float | None, what: str) -> float | None:
    """Seconds left before ``deadline`` (a ``time.monotonic()`` instant), None if unbounded.

    Every blocking call inside a handler is given this as its timeout, so the whole unit
    of work ends by its deadline; raises ``StageTimeout`` naming ``what`` once it has passed.
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise StageTimeout(f"{what}: deadline passed")
    return left


def classify(exc: BaseException) -> tuple[ErrorClass, Reason]:
    """The runtime's view of any exception: its class and reason code."""
    if isinstance(exc, VidinsightError):
        return exc.error_class, exc.reason
    if isinstance(exc, TimeoutError):
        return ErrorClass.TRANSIENT, Reason.TIMEOUT
    return ErrorClass.UNKNOWN, Reason.UNEXPECTED_ERROR


# Money spent before a failure is still spent. A handler that paid a provider and then
# failed hangs those cost events on the exception it raises (any exception: a provider
# timeout after an earlier paid call is not ours to subclass), and the stage runtime
# emits them with the retry's eventual result or with the dead letter.
COST_EVENTS_ATTRIBUTE = "cost_events"


def costs_of(exc: BaseException) -> list[Mapping[str, Any]]:
    """The cost events paid before ``exc`` was raised (none unless some were attached)."""
    return list(getattr(exc, COST_EVENTS_ATTRIBUTE, None) or [])


def attach_costs(exc: BaseException, events: Sequence[Mapping[str, Any]]) -> None:
    """Add ``events`` to those ``exc`` already carries, keeping the earliest first."""
    if events:
        setattr(exc, COST_EVENTS_ATTRIBUTE, [*events, *costs_of(exc)])
