"""One poller per gateway process behind every open event stream (``/v1/jobs/{id}/events``).

Each round (``VI_GATEWAY_SSE_POLL_SECONDS``) reads, in one transaction, the jobs and stage
runs of every watched job and which of the streams' API keys are still active, then
hands each stream its job's new view or closes it if its key was revoked. The database
sees two or three queries per interval however many streams are open, instead of one
query per stream per interval.

Why polling and not PostgreSQL LISTEN/NOTIFY: job and stage-run rows are written by
every stage worker, the gateway and the CLI; NOTIFY would need triggers on both tables
(a migration on the pipeline's hot path) and one connection per gateway process held
outside the pool, and it would still need a poll to notice revoked keys. One batched
read per interval is cheap, bounded by the open streams (capped per customer), and
keeps the writers unchanged.

Streams and the poller live on the event loop (no locks); the reads run on a worker
thread. Firebase-token streams carry no key to re-check: they end with their bounded
lifetime (``VI_GATEWAY_SSE_MAX_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from gateway.api_errors import ApiError
from gateway.auth import Caller
from gateway.job_view import JobView, job_view
from sinks.customers import active_key_hashes
from sinks.db import Pool, transaction
from sinks.jobs import get_jobs
from sinks.stage_runs import runs_for_jobs
from vidinsight.errors import Reason
from vidinsight.settings import Settings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscription:
    """One open stream: its job, its caller, and the latest view the poller saw."""

    job_id: str
    caller: Caller
    latest: JobView | None = None
    revoked: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, timeout: float) -> bool:
        """True when the view changed or the key was revoked within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    def offer(self, view: JobView) -> None:
        if self.latest is None or changed(self.latest, view):
            self.latest = view
            self._changed.set()

    def revoke(self) -> None:
        self.revoked = True
        self._changed.set()


def changed(before: JobView, after: JobView) -> bool:
    """A change a watcher cares about (timestamps alone moving is not one)."""
    return (before.status, before.stages, before.error) != (after.status, after.stages, after.error)


class EventPoller:
    """The process's streams, per customer, and the task that polls for all of them."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._pool = pool
        self._interval = settings.gateway_sse_poll_seconds
        self._max_per_customer = settings.gateway_sse_max_streams_per_customer
        self._retry_after = str(settings.gateway_quota_retry_after_seconds)
        self._by_customer: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # polling rounds that read the database (for tests and debugging)

    def subscribe(self, job_id: str, caller: Caller) -> Subscription:
        """A new stream for ``caller``; 429 ``too_many_streams`` when it holds its cap."""
        streams = self._by_customer.setdefault(caller.customer_id, set())
        if len(streams) >= self._max_per_customer:
            raise ApiError(
                Reason.TOO_MANY_STREAMS,
                f"at most {self._max_per_customer} event streams may be open at once",
                status=429,
                headers={"Retry-After": self._retry_after},
            )
        subscription = Subscription(job_id, caller)
        streams.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a stream (harmless twice)."""
        streams = self._by_customer.get(subscription.caller.customer_id, set())
        streams.discard(subscription)
        if not streams:
            self._by_customer.pop(subscription.caller.customer_id, None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sse-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll_once()
            except Exception:
                log.exception("event stream poll failed; the streams wait for the next round")

    async def poll_once(self) -> None:
        """Read every watched job and credential once; wake the streams that changed."""
        subscriptions = [s for streams in self._by_customer.values() for s in streams]
        if not subscriptions:
            return
        job_ids = {s.job_id for s in subscriptions}
        keys = {s.caller.key_sha256 for s in subscriptions if s.caller.key_sha256 is not None}
        views, active_keys = await run_in_threadpool(self._read, job_ids, keys)
        self.rounds += 1
        for subscription in subscriptions:
            key = subscription.caller.key_sha256
            if key is not None and key not in active_keys:
                subscription.revoke()
            elif view := views.get((subscription.job_id, subscription.caller.customer_id)):
                subscription.offer(view)

    def _read(
        self, job_ids: Iterable[str], keys: Iterable[bytes]
    ) -> tuple[dict[tuple[str, str], JobView], set[bytes]]:
        """The jobs' views by (job, owner), so a stream only ever sees its own customer's
        job (I6), and the active keys among ``keys``."""
        with transaction(self._pool) as conn:
            rows = get_jobs(conn, list(job_ids))
            runs = runs_for_jobs(conn, [row["job_id"] for row in rows])
            views = {
                (row["job_id"], row["customer_id"]): job_view(row, runs.get(row["job_id"], []))
                for row in rows
            }
            return views, active_key_hashes(conn, list(keys))


def event_poller(request: Request) -> EventPoller:
    """The dependency that hands a route its gateway's event poller."""
    poller: EventPoller = request.app.state.event_poller
    return poller


# A route parameter of this type receives its gateway's event poller.
EventPollerDep = Annotated[EventPoller, Depends(event_poller)]
