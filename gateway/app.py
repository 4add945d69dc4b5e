"""The gateway application: ``create_app(settings)`` assembles routes, errors and lifecycle.

Start-up opens the database pool, the idempotent producer, the Firebase verifier and
the lag monitor, and starts the outbox relay, the upload sweeper, the readiness probes,
the event-stream poller and the metrics listener (a port of its own); shutdown stops
them in reverse order. Every request passes the edge (``gateway/edge.py``: authentication and body
limits before the body is read) inside the request metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import api_errors, metrics
from gateway.backpressure import LagMonitor
from gateway.context import GatewayContext, jobs_topic
from gateway.edge import Edge, edge_routes
from gateway.event_poller import EventPoller
from gateway.firebase import FirebaseVerifier
from gateway.outbox import Publisher, Relay
from gateway.readiness import Readiness
from gateway.routes import events, health, jobs, pages, results, spend, uploads
from gateway.upload_storage import UploadSweeper
from schemas.codec import Codec
from sinks.blobs import BlobStore
from sinks.db import create_pool
from telemetry.analytics import Analytics
from topics.admin import admin_client
from vidinsight.settings import Settings, get_settings

log = logging.getLogger(__name__)
ROUTE_MODULES = (health, uploads, jobs, events, results, spend, pages)
# Routes that read their own body chunk by chunk under their own cap (the media upload).
STREAMED_BODY_MODULES = (uploads,)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A gateway app for ``settings`` (the process settings by default)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each part registers its own stop as soon as it runs, so a failed start-up stops
        # what had started, and shutdown stops everything, in reverse order.
        async with AsyncExitStack() as started:
            ctx = _open_context(settings, started)
            relay = Relay(settings, ctx.pool, ctx.publisher)
            relay.start()
            started.callback(relay.stop)
            sweeper = UploadSweeper(settings, ctx.pool, ctx.blobs)
            sweeper.start()
            started.callback(sweeper.stop)
            readiness = Readiness(ctx)
            readiness.start()
            started.callback(readiness.stop)
            poller = EventPoller(settings, ctx.pool)
            poller.start()
            started.push_async_callback(poller.stop)
            listener = metrics.MetricsListener(settings, ctx.pool)
            started.callback(listener.close)
            app.state.context = ctx
            app.state.readiness = readiness
            app.state.event_poller = poller
            log.info("gateway started", extra={"topic": ctx.jobs_topic})
            yield

    app = FastAPI(
        title="vidinsight",
        version="1.0.0",
        description="Submit long-form video, follow its processing, read its insights.",
        lifespan=lifespan,
    )
    api_errors.install(app)
    for module in ROUTE_MODULES:
        app.include_router(module.router)
    app.add_middleware(
        Edge,
        routes=edge_routes(
            _api_routes(ROUTE_MODULES),
            _api_routes(STREAMED_BODY_MODULES),
            settings.gateway_max_json_bytes,
        ),
        max_json_bytes=settings.gateway_max_json_bytes,
    )
    app.add_middleware(RequestMetrics)
    return app


def _api_routes(modules: tuple[ModuleType, ...]) -> list[APIRoute]:
    """The API routes of these route modules, in the order the app matches them."""
    return [r for module in modules for r in module.router.routes if isinstance(r, APIRoute)]


def _open_context(settings: Settings, started: AsyncExitStack) -> GatewayContext:
    """The request context; each part that holds resources is closed by ``started``."""
    topic = jobs_topic(settings)
    pool = create_pool(settings, name="gateway")
    started.callback(pool.close)
    publisher = Publisher(settings, Codec(settings.registry_url), topic, pool)
    started.callback(publisher.close)
    admin = admin_client(settings.kafka_bootstrap)
    analytics = Analytics(settings)
    started.callback(analytics.close)
    lag = LagMonitor(settings, admin, settings.gateway_lag_group, topic)
    started.callback(lag.close)
    return GatewayContext(
        settings=settings,
        pool=pool,
        publisher=publisher,
        firebase=FirebaseVerifier(settings),
        lag=lag,
        admin=admin,
        blobs=BlobStore.from_settings(settings),
        analytics=analytics,
    )


class RequestMetrics:
    """Latency of every request by route template (never the raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.REQUESTS.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
