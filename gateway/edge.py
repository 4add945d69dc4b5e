"""The gateway's edge: who is calling and how big the body may be, before a byte of it is read.

FastAPI parses a route's JSON body before it runs the route's dependencies, and uvicorn
sets no body limit: left alone, an unauthenticated multi-gigabyte POST would be read
into memory before its 401. This pure ASGI middleware (``BaseHTTPMiddleware`` would
buffer) runs first and, for the route a request matches:

- authenticates it (``gateway.auth.authenticate``) when the route needs a caller, and
  answers 401 without calling ``receive`` at all (uvicorn stops reading the socket once
  its small buffer fills); the ``Caller`` is left in the request state for the route;
- refuses a declared ``Content-Length`` over the route's limit with 413 before reading,
  and answers 413 the moment a streamed (chunked) body crosses it, ending the request.

JSON routes get ``VI_GATEWAY_MAX_JSON_BYTES``. Streamed routes (uploads) get no limit
here: they write the body to the blob store chunk by chunk and cut it off at their own
cap, so nothing is buffered either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api_errors import DEPENDENCY_RETRY_AFTER_SECONDS, ApiError, error_response
from gateway.auth import CALLER_STATE, authenticate, current_caller
from gateway.context import GatewayContext
from vidinsight.errors import Reason, VidinsightError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeRoute:
    """What the edge enforces for one route: a caller, and a body limit (None: streamed)."""

    route: APIRoute
    authenticated: bool
    max_body_bytes: int | None


def edge_routes(
    routes: Iterable[APIRoute], streamed: Iterable[APIRoute], max_json_bytes: int
) -> list[EdgeRoute]:
    """The edge's view of ``routes``: those depending on the caller are authenticated;
    ``streamed`` ones read their own body under their own cap, the rest get the JSON limit."""
    streamed_ids = {id(route) for route in streamed}
    return [
        EdgeRoute(
            route,
            authenticated=current_caller in _dependency_calls(route.dependant),
            max_body_bytes=None if id(route) in streamed_ids else max_json_bytes,
        )
        for route in routes
    ]


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any] | None]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _dependency_calls(dependency)


class BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body passed its limit (already answered)."""


class Edge:
    """Authentication and body limits ahead of the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, routes: list[EdgeRoute], max_json_bytes: int) -> None:
        self.app = app
        self.routes = routes
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        edge_route = self._match(scope)
        limit = self.max_json_bytes if edge_route is None else edge_route.max_body_bytes
        if edge_route is not None:
            scope["route"] = edge_route.route  # request metrics label even a refusal here
        refusal = _declared_too_large(scope, limit)
        if refusal is None and edge_route is not None and edge_route.authenticated:
            refusal = await _authenticate(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if limit is None:
            await self.app(scope, receive, send)
        else:
            await _limited(self.app, scope, receive, send, limit)

    def _match(self, scope: Scope) -> EdgeRoute | None:
        """The route the app will dispatch to, matched the same way (path and method)."""
        for edge_route in self.routes:
            match, _ = edge_route.route.matches(scope)
            if match == Match.FULL:
                return edge_route
        return None


# Every refusal here leaves a body unread: closing the connection stops uvicorn from
# reading (and discarding) the rest of it to keep the connection alive.
CLOSE = {"Connection": "close"}


def _too_large(limit: int) -> Response:
    return error_response(
        413, Reason.BODY_TOO_LARGE, f"the request body is limited to {limit} bytes here", CLOSE
    )


def _declared_too_large(scope: Scope, limit: int | None) -> Response | None:
    """413 for a ``Content-Length`` over ``limit``, decided before reading anything."""
    if limit is None:
        return None
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return _too_large(limit)
    return None


async def _authenticate(scope: Scope) -> Response | None:
    """Leave the caller in the request state; the refusal to send if there is none."""
    ctx: GatewayContext = scope["app"].state.context
    authorization = next((v for n, v in scope["headers"] if n == b"authorization"), None)
    try:
        caller = await authenticate(
            ctx, None if authorization is None else authorization.decode("latin-1")
        )
    except ApiError as exc:
        return error_response(exc.status, exc.reason, exc.message, exc.headers | CLOSE)
    except VidinsightError as exc:  # PostgreSQL or Google's key server is down
        log.warning(
            "authentication failed", extra={"reason": exc.reason.value, "detail": exc.message}
        )
        retry = {"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)}
        return error_response(503, exc.reason, exc.message, retry | CLOSE)
    scope.setdefault("state", {})[CALLER_STATE] = caller
    return None


async def _limited(app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Run ``app`` with a ``receive`` that answers 413 once the body passes ``limit``.

    After that answer the app's own response (it sees the body end in an error) is
    dropped: the client already has the one that says why. A response already under way
    (a stream that never reads the body) is cut off instead.
    """
    received = 0
    started = answered = False

    async def counting_receive() -> Message:
        nonlocal received, answered
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                if not started:
                    answered = True
                    await _too_large(limit)(scope, receive, send)
                raise BodyTooLarge(f"body passed {limit} bytes")
        return message

    async def guarded_send(message: Message) -> None:
        nonlocal started
        if answered:
            return
        started = True
        await send(message)

    try:
        await app(scope, counting_receive, guarded_send)
    except BodyTooLarge:
        if not answered:
            raise
