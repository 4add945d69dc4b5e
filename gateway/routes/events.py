"""Live progress: ``GET /v1/jobs/{job_id}/events`` as Server-Sent Events.

The stream sends the job's view (the same document as ``GET /v1/jobs/{job_id}``) at
once and again whenever its status or a stage changes, and ends after the job
finishes. State lives in PostgreSQL, so any gateway process can serve any job's
stream; it polls at a short interval instead of holding a broker consumer per client.
A comment line every few seconds keeps proxies from closing an idle stream, and a
stream ends after a bounded time (the client's EventSource reconnects by itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from gateway.api_errors import responses
from gateway.auth import CustomerId
from gateway.context import Context, GatewayContext
from gateway.job_access import JobId, owned_job
from gateway.job_view import JobView, job_view
from sinks.db import transaction
from sinks.jobs import TERMINAL_STATUSES
from sinks.stage_runs import runs_for_job

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
        **responses(401, 404, 503),
    },
)
async def job_events(
    request: Request, job_id: JobId, customer_id: CustomerId, ctx: Context
) -> StreamingResponse:
    """Server-Sent Events (``event: job``) of the job's view on every change, until it ends."""
    first = await run_in_threadpool(_current, ctx, job_id, customer_id)  # 404 before streaming
    return StreamingResponse(
        _stream(request, ctx, first, customer_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request, ctx: GatewayContext, view: JobView, customer_id: str
) -> AsyncIterator[str]:
    settings = ctx.settings
    ends_at = time.monotonic() + settings.gateway_sse_max_seconds
    last_sent = time.monotonic()
    yield _event(view)
    while view.status not in TERMINAL_STATUSES and time.monotonic() < ends_at:
        await asyncio.sleep(settings.gateway_sse_poll_seconds)
        if await request.is_disconnected():
            return
        latest = await run_in_threadpool(_current, ctx, view.job_id, customer_id)
        if _changed(view, latest):
            view = latest
            last_sent = time.monotonic()
            yield _event(view)
        elif time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"


def _changed(before: JobView, after: JobView) -> bool:
    """A change a watcher cares about (timestamps alone moving is not one)."""
    return (before.status, before.stages, before.error) != (after.status, after.stages, after.error)


def _event(view: JobView) -> str:
    return f"event: job\ndata: {view.model_dump_json()}\n\n"
