"""Product analytics through PostHog: job submitted, completed, failed.

Off unless ``VI_POSTHOG_API_KEY`` is set. The distinct id is the customer_id and the
properties are ids, counts and reason codes only: no names, e-mail addresses, URLs or
file names ever leave the platform this way. Events are queued and sent in batches by
the PostHog client's own thread, so a slow analytics endpoint never slows a request.
It lives in telemetry/ so the gateway (submitted) and the notify stage (completed,
failed) share one client setup.
"""

from __future__ import annotations

import logging
from typing import Any

from posthog import Posthog

from vidinsight.settings import Settings

log = logging.getLogger(__name__)

JOB_SUBMITTED = "job submitted"
JOB_COMPLETED = "job completed"
JOB_FAILED = "job failed"


class Analytics:
    """A PostHog client, or nothing at all when no key is configured."""

    def __init__(self, settings: Settings, *, flush_interval_seconds: float = 1.0) -> None:
        self._client: Posthog | None = None
        if settings.posthog_api_key:
            self._client = Posthog(
                settings.posthog_api_key,
                host=settings.posthog_host,
                flush_interval=flush_interval_seconds,
                disable_geoip=True,
                on_error=self._on_error,
            )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def capture(self, event: str, customer_id: str, properties: dict[str, Any]) -> None:
        """Queue one event for the customer (never raises: analytics must not fail a job)."""
        if self._client is None:
            return
        try:
            self._client.capture(event, distinct_id=customer_id, properties=properties)
        except Exception:
            log.warning("analytics event dropped", extra={"event": event}, exc_info=True)

    def close(self) -> None:
        """Send what is queued and stop the client's thread."""
        if self._client is not None:
            self._client.shutdown()

    @staticmethod
    def _on_error(error: Exception, _items: Any) -> None:
        log.warning("analytics batch not delivered", extra={"detail": str(error)})
