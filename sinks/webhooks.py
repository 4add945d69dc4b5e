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

Signature: header ``Vidinsight-Signature: t=<unix seconds>,v1=<hex>``, where hex is
HMAC-SHA256 with the platform's webhook secret over ``"<t>." + body``. Receivers
recompute it and reject old timestamps, which defeats replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore

from media.fetch import TRANSPORT_ERRORS, Network, bounded_pool, parse_networks, pin
from sinks.db import Pool, transaction
from sinks.deliveries import record_delivery
from vidinsight.errors import PermanentError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "Vidinsight-Signature"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class WebhookPolicy:
    """How webhooks are signed and retried."""

    secret: str
    max_attempts: int
    backoff_initial_seconds: float
    backoff_max_seconds: float
    timeout_seconds: float
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        return cls(
            secret=settings.webhook_signing_secret,
            max_attempts=settings.webhook_max_attempts,
            backoff_initial_seconds=settings.webhook_backoff_initial_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            allowed_networks=parse_networks(settings.fetch_allowed_networks),
        )

    def backoff_seconds(self, attempt: int) -> float:
        """Exponential backoff after the ``attempt``-th failure, capped."""
        return min(self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** (attempt - 1))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Vidinsight-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


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
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
) -> bool:
    """POST ``event`` to ``url`` until a 2xx or the attempts run out; True if delivered.

    A URL the SSRF guard refuses is recorded once and never retried. Without a signing
    secret nothing is sent: an unsigned webhook could be forged by anyone. With a
    ``deadline`` (a ``time.monotonic()`` instant) every attempt ends by it and no backoff
    starts that would end past it; running out of time is recorded as a failed attempt
    whose error starts with ``stage_timeout`` and returns False rather than raising, so
    the caller's other notifications carry on.
    """
    if not policy.secret:
        log.warning(
            "webhook not sent: VI_WEBHOOK_SIGNING_SECRET is not set", extra={"job_id": job_id}
        )
        return False
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    for attempt in range(1, policy.max_attempts + 1):
        status, error, retry = _attempt(url, body, policy, deadline)
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


def _attempt(
    url: str, body: bytes, policy: WebhookPolicy, deadline: float | None
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
        SIGNATURE_HEADER: signature(policy.secret, int(time.time()), body),
    }
    try:
        with (
            bounded_pool(until) as connections,
            connections.stream(
                "POST",
                pinned.url,
                content=body,
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
