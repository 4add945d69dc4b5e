"""Structured JSON logs from one place.

Every line is one JSON object. Lines about a job carry ``job_id``, ``customer_id``,
``stage`` and ``attempt`` (invariant I4); failures carry ``reason``. Secrets are
scrubbed from the message and every field before the line is written
(``telemetry.redaction``), so an API key, a password in a URL or a signed URL's query
never reaches a log file.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from telemetry.redaction import redact
from vidinsight.errors import Reason

# Fields a caller may attach with ``extra=``; anything else on the record is ignored.
CONTEXT_FIELDS = (
    "job_id",
    "customer_id",
    "stage",
    "attempt",
    "reason",
    "duration_ms",
    "topic",
    "partition",
    "offset",
    "error_class",
    "exception_type",
    "event",
    "detail",
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# The message a thread is working on (job, customer, stage, attempt), set by the stage
# runtime around each handler so a stage's own log lines carry it without building it
# by hand (as Quix Streams' message_context() does). Fields passed with ``extra=`` win.
_message_fields: ContextVar[dict[str, Any] | None] = ContextVar("message_fields", default=None)


@contextmanager
def message_context(**fields: Any) -> Iterator[None]:
    """Every log line of this thread (or task) inside the block carries ``fields``; one
    that is None is written as null (a message that cannot be decoded has a job key but
    no known customer, and its lines say so rather than leave the field out)."""
    token = _message_fields.set(dict(fields))
    try:
        yield
    finally:
        _message_fields.reset(token)


# librdkafka's own log (connection losses, retries) through this process's JSON lines:
# every Kafka client passes it as its ``logger``, so nothing reaches stderr unformatted.
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")


def intake_fields(job_id: str, customer_id: str) -> dict[str, Any]:
    """The fields of a line about a job that no stage holds yet: the gateway took it in,
    and taking it in is its first attempt (invariant I4 holds there too)."""
    return {"job_id": job_id, "customer_id": customer_id, "stage": "gateway", "attempt": 1}


def update_message_context(**fields: Any) -> None:
    """Change fields of the enclosing ``message_context`` (a message's next attempt), so
    the lines logged from here on say so; outside any context it does nothing."""
    current = _message_fields.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with the context fields it carries."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_message_fields.get() or {})
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(_scrub(line), default=str)


class DependencyReasons(logging.Filter):
    """Gives a library's warnings about its connection a reason code (invariant I4: every
    failure carries one): a pool discarding a connection PostgreSQL closed is the
    database going away, librdkafka losing a broker is the broker going away."""

    REASONS = {
        "psycopg.pool": Reason.DATABASE_UNAVAILABLE.value,
        "librdkafka": Reason.BROKER_UNAVAILABLE.value,
    }

    def filter(self, record: logging.LogRecord) -> bool:
        reason = self.REASONS.get(record.name)
        if reason and record.levelno >= logging.WARNING and not getattr(record, "reason", None):
            record.reason = reason
        return True


def configure(level: str = "INFO") -> None:
    """Route every logger of the process to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(DependencyReasons())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
