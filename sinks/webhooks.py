"""Webhooks: a job's outcome delivered to the customer's endpoint, signed and retried.

A webhook is the customer-side sink of a job's result, so it lives with the other
sinks; the notify stage (and anything else that ends a job) calls ``deliver``. Every
attempt is recorded in ``webhook_deliveries`` (``sinks.deliveries``), so support can
answer "did you call us?" attempt by attempt.

Security: the receiver's URL passes the same SSRF guard as ingestion's fetcher
(``media.fetch.pin``: after DNS resolution, only public unicast
addresses), the connection goes to the address that was checked (the host name only
travels as ``Host`` and TLS SNI, so a DNS answer that changes between check and
connect cannot redirect the call inward), and redirects are never followed.

Time: an attempt is one exchange, connect to the answer's last byte, bounded as a whole
(``media.fetch.bounded_pool``) by the policy's timeout and by the caller's deadline, so a
receiver that drips its headers or never ends its answer cannot hold the notify stage.

Signature (the Standard Webhooks scheme, as Svix sends it): headers ``webhook-id`` (the
delivery id, the same on every retry and redelivery of one event, for receivers to
deduplicate), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``: one
``v1,<base64 HMAC-SHA256>`` per secret of the customer, space-separated, over
``"<id>.<timestamp>." + body``. Each customer has its own secrets
(``sinks.customers.webhook_signing_secrets``); during a rotation's overlap the old and
the new one both sign. Receivers check one of the signatures with the secret they hold
and reject old timestamps, which defeats replays (docs/integration.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore

from media.fetch import TRANSPORT_ERRORS, Network, bounded_pool, parse_networks, pin
from sinks.customers import WEBHOOK_SECRET_PREFIX
from sinks.db import Pool, transaction
from sinks.deliveries import record_delivery
from vidinsight.errors import PermanentError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class WebhookPolicy:
    """How webhooks are retried."""

    max_attempts: int
    backoff_initial_seconds: float
    backoff_max_seconds: float
    timeout_seconds: float
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        return cls(
            max_attempts=settings.webhook_max_attempts,
            backoff_initial_seconds=settings.webhook_backoff_initial_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            allowed_networks=parse_networks(settings.fetch_allowed_networks),
        )

    def backoff_seconds(self, attempt: int) -> float:
        """Exponential backoff after the ``attempt``-th failure, capped."""
        return min(self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** (attempt - 1))


def signature(secrets: Sequence[str], delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>`` per secret, space-separated.

    A secret is ``whsec_`` and its key in base64; the key is what HMAC is keyed with.
    """
    content = f"{delivery_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(secret), content, hashlib.sha256).digest()).decode()
        for secret in secrets
    )


def _key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))


def delivery_id(event: Mapping[str, Any]) -> str:
    """The event's ``webhook-id``: a function of its type and job, so every retry and every
    redelivery of one announcement carries the same id (and the id is header-safe
    whatever characters an upstream system put in its job id)."""
    digest = hashlib.sha256(f"{event['type']}\0{event['job_id']}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def job_event(job: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body for a finished job: its id, status and error (ids and codes only)."""
    error = None
    if job.get("error_reason"):
        error = {
            "reason": job["error_reason"],
            "message": job.get("error_message") or "",
            "stage": job.get("error_stage"),
        }
    return {
        "type": f"job.{job['status']}",
        "job_id": job["job_id"],
        "status": job["status"],
        "error": error,
    }


def deliver(
    pool: Pool,
    job_id: str,
    url: str,
    event: Mapping[str, Any],
    policy: WebhookPolicy,
    signing_secrets: Sequence[str],
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
) -> bool:
    """POST ``event`` to ``url`` until a 2xx or the attempts run out; True if delivered.

    Every attempt is signed anew (a fresh timestamp, the same delivery id) with each of
    the customer's ``signing_secrets``. A URL the SSRF guard refuses is recorded once
    and never retried. Without a signing secret nothing is sent: an unsigned webhook
    could be forged by anyone. With a ``deadline`` (a ``time.monotonic()`` instant)
    every attempt ends by it and no backoff starts that would end past it; running out
    of time is recorded as a failed attempt whose error starts with ``stage_timeout``
    and returns False rather than raising, so the caller's other notifications carry on.
    """
    if not signing_secrets:
        log.warning(
            "webhook not sent: no signing secret (VI_WEBHOOK_SECRETS_KEY is not set)",
            extra={"job_id": job_id},
        )
        return False
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    signed = _Signed(delivery_id(event), tuple(signing_secrets), body)
    for attempt in range(1, policy.max_attempts + 1):
        status, error, retry = _attempt(url, signed, policy, deadline)
        _record(pool, job_id, url, attempt, status, error)
        if status is not None and 200 <= status < 300:
            return True
        log.info(
            "webhook attempt failed",
            extra={"job_id": job_id, "attempt": attempt, "detail": error},
        )
        if not retry or attempt == policy.max_attempts:
            return False
        pause = policy.backoff_seconds(attempt)
        if deadline is not None and time.monotonic() + pause >= deadline:
            late = f"stage_timeout: not sent: a {pause:g} s backoff would end past the deadline"
            _record(pool, job_id, url, attempt + 1, None, late)
            return False
        sleep(pause)
    return False


def _record(
    pool: Pool, job_id: str, url: str, attempt: int, status: int | None, error: str | None
) -> None:
    """One row of ``webhook_deliveries``, committed at once so support sees it mid-retry."""
    with transaction(pool) as conn:
        record_delivery(conn, job_id, url, attempt, status, error)


@dataclass(frozen=True)
class _Signed:
    """What every attempt of one delivery sends: its id, the secrets and the body."""

    delivery_id: str
    secrets: tuple[str, ...] = field(repr=False)  # never in a log line or a traceback
    body: bytes

    def headers(self) -> dict[str, str]:
        """The signature headers of an attempt made now."""
        now = int(time.time())
        return {
            ID_HEADER: self.delivery_id,
            TIMESTAMP_HEADER: str(now),
            SIGNATURE_HEADER: signature(self.secrets, self.delivery_id, now, self.body),
        }


def _attempt(
    url: str, signed: _Signed, policy: WebhookPolicy, deadline: float | None
) -> tuple[int | None, str | None, bool]:
    """One delivery: (HTTP status or None, error text or None, whether to retry).

    The answer counts once it has arrived whole (its body is read and dropped): an
    attempt is then one bounded exchange, and a receiver whose answer never ends is
    treated like one that never answers.
    """
    now = time.monotonic()
    if deadline is not None and deadline <= now:
        return None, "stage_timeout: not sent: the deadline has passed", False
    until = now + policy.timeout_seconds
    if deadline is not None:
        until = min(until, deadline)
    try:
        pinned = pin(url, policy.allowed_networks)
    except PermanentError as exc:
        return None, f"{exc.reason.value}: {exc.message}"[:MAX_ERROR_CHARS], False
    headers = {
        **pinned.headers,
        "Content-Type": "application/json",
        "User-Agent": "vidinsight-webhooks/1",
        **signed.headers(),
    }
    try:
        with (
            bounded_pool(until) as connections,
            connections.stream(
                "POST",
                pinned.url,
                content=signed.body,
                headers=list(headers.items()),
                extensions=pinned.extensions,
            ) as answer,
        ):
            for _ in answer.iter_stream():
                pass
    except httpcore.TimeoutException:
        if deadline is not None and time.monotonic() >= deadline:
            return None, "stage_timeout: the deadline passed before the answer ended", False
        return None, f"timeout: no complete answer within {policy.timeout_seconds:g} s", True
    except TRANSPORT_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS], True
    error = None if 200 <= answer.status < 300 else f"answered HTTP {answer.status}"
    return answer.status, error, True
