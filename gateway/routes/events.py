"""Live progress: ``GET /v1/jobs/{job_id}/events`` as Server-Sent Events.

The stream sends the job's view (the same document as ``GET /v1/jobs/{job_id}``) at
once and again whenever its status or a stage changes, and ends after the job
finishes. State lives in PostgreSQL, so any gateway process can serve any job's
stream; the process's one poller (``gateway/event_poller.py``) reads every watched job
per interval instead of holding a broker consumer or a polling loop per client.
A comment line every few seconds keeps proxies from closing an idle stream, and a
stream ends after a bounded time (the client's EventSource reconnects by itself).
A customer holds at most ``VI_GATEWAY_SSE_MAX_STREAMS_PER_CUSTOMER`` streams per
process (429 ``too_many_streams``), and a stream whose API key is revoked ends with an
``error`` event (the reconnection then gets 401).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.api_errors import responses
from gateway.auth import CallerDep
from gateway.context import Context, GatewayContext
from gateway.event_poller import EventPoller, EventPollerDep, Subscription, changed
from gateway.job_access import JobId, owned_job
from gateway.job_view import JobView, job_view
from sinks.db import transaction
from sinks.jobs import TERMINAL_STATUSES
from sinks.stage_runs import runs_for_job
from vidinsight.errors import Reason

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
KEEPALIVE_SECONDS = 10.0


def _current(ctx: GatewayContext, job_id: str, customer_id: str) -> JobView:
    with transaction(ctx.pool) as conn:
        return job_view(owned_job(conn, job_id, customer_id), runs_for_job(conn, job_id))


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **responses(401, 404, 429, 503),
    },
)
async def job_events(
    job_id: JobId, caller: CallerDep, ctx: Context, poller: EventPollerDep
) -> StreamingResponse:
    """Server-Sent Events (``event: job``) of the job's view on every change, until it ends."""
    subscription = poller.subscribe(job_id, caller)  # 429 before any database work
    try:
        first = await run_in_threadpool(_current, ctx, job_id, caller.customer_id)  # 404
    except BaseException:
        poller.unsubscribe(subscription)
        raise
    return _EventStream(poller, subscription, _stream(subscription, first, ctx))


class _EventStream(StreamingResponse):
    """The stream's response; its subscription ends with it, however the stream ends."""

    def __init__(
        self, poller: EventPoller, subscription: Subscription, events: AsyncIterator[str]
    ) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._poller = poller
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._poller.unsubscribe(self._subscription)


async def _stream(
    subscription: Subscription, view: JobView, ctx: GatewayContext
) -> AsyncIterator[str]:
    ends_at = time.monotonic() + ctx.settings.gateway_sse_max_seconds
    yield _event(view)
    while view.status not in TERMINAL_STATUSES:
        left = ends_at - time.monotonic()
        if left <= 0:
            return
        if not await subscription.wait(min(KEEPALIVE_SECONDS, left)):
            yield ": keep-alive\n\n"
        elif subscription.revoked:
            yield _revoked()
            return
        elif subscription.latest is not None and changed(view, subscription.latest):
            view = subscription.latest
            yield _event(view)


def _event(view: JobView) -> str:
    return f"event: job\ndata: {view.model_dump_json()}\n\n"


def _revoked() -> str:
    error = {"reason": Reason.UNAUTHENTICATED.value, "message": "the API key was revoked"}
    return f"event: error\ndata: {json.dumps({'error': error})}\n\n"
