"""The one error shape of the API, ``{"error": {"reason", "message"}}``, and its HTTP statuses.

Every failure a caller sees carries a reason code from ``vidinsight.errors.Reason``, so
clients branch on a stable string instead of parsing messages. Exceptions raised on
purpose anywhere below the gateway (``VidinsightError``) are translated here, once.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidinsight.errors import Reason, TransientError, VidinsightError

log = logging.getLogger(__name__)

# The HTTP status for each reason a route may raise; anything else is a 500.
STATUS_FOR_REASON: dict[Reason, int] = {
    Reason.UNAUTHENTICATED: 401,
    Reason.BUDGET_EXCEEDED: 402,
    Reason.NOT_FOUND: 404,
    Reason.CONFLICT: 409,
    Reason.JOB_NOT_COMPLETED: 409,
    Reason.TOO_LARGE: 413,
    Reason.UPLOAD_QUOTA_EXCEEDED: 413,
    Reason.UPLOAD_IN_USE: 409,
    Reason.INVALID_REQUEST: 422,
    Reason.IDEMPOTENCY_KEY_REUSED: 422,
    Reason.SOURCE_FORBIDDEN: 422,
    Reason.SOURCE_UNREACHABLE: 422,
    Reason.QUOTA_EXCEEDED: 429,
    Reason.OVERLOADED: 503,
    Reason.DATABASE_UNAVAILABLE: 503,
    Reason.BROKER_UNAVAILABLE: 503,
    Reason.REGISTRY_UNAVAILABLE: 503,
    Reason.PROVIDER_UNAVAILABLE: 503,
}
# How long a client should wait before retrying after an outage of a dependency.
DEPENDENCY_RETRY_AFTER_SECONDS = 5


class ErrorDetail(BaseModel):
    reason: str
    message: str


class ErrorResponse(BaseModel):
    """What every non-2xx response of the API looks like."""

    error: ErrorDetail


class ApiError(Exception):
    """An error a route raises to answer with a given status, reason and headers."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status or STATUS_FOR_REASON.get(reason, 500)
        self.headers = headers or {}


def error_response(
    status: int, reason: Reason | str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error response."""
    body = {"error": {"reason": str(reason), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the error responses a route may give, all in the one shape."""
    described = {
        401: "Missing, malformed, expired or revoked credential",
        402: "The customer's monthly budget is spent",
        404: "No such resource for this customer",
        409: "The resource is not in a state that allows this",
        413: "The body is larger than allowed",
        415: "Unsupported content type",
        422: "The request is invalid",
        429: "Over the customer's quota; retry after Retry-After seconds",
        503: "Overloaded or a dependency is down; retry after Retry-After seconds",
    }
    return {s: {"model": ErrorResponse, "description": described[s]} for s in statuses}


# What every route that takes a body may answer before the route runs: the edge's size
# limit (gateway/edge.py) and FastAPI's own refusal of a body it cannot parse.
BODY_ERRORS = {
    400: "The body cannot be parsed (not JSON, not UTF-8)",
    413: "The body is larger than allowed",
}


def document_body_errors(app: FastAPI) -> None:
    """Add ``BODY_ERRORS`` to every operation with a request body in ``/openapi.json``,
    so the contract lists what a client can really receive."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path in schema["paths"].values():
            for operation in path.values():
                if "requestBody" in operation:
                    for status, description in BODY_ERRORS.items():
                        operation["responses"].setdefault(
                            str(status), {"description": description, "content": error}
                        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Make every error the app can produce use the one shape, and document it."""
    document_body_errors(app)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(VidinsightError, _vidinsight_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.DataError, _unstorable_value)
    app.add_exception_handler(UnicodeEncodeError, _unstorable_value)
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.reason, exc.message, exc.headers)


async def _vidinsight_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VidinsightError)
    status = STATUS_FOR_REASON.get(exc.reason, 500)
    headers = {}
    if isinstance(exc, TransientError) or status == 503:
        headers["Retry-After"] = str(DEPENDENCY_RETRY_AFTER_SECONDS)
    if status >= 500:
        log.warning("request failed", extra={"reason": exc.reason.value, "detail": exc.message})
    return error_response(status, exc.reason, exc.message, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )
    return error_response(422, Reason.INVALID_REQUEST, problems or "invalid request")


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = Reason.NOT_FOUND if exc.status_code == 404 else Reason.INVALID_REQUEST
    return error_response(exc.status_code, reason, str(exc.detail), dict(exc.headers or {}))


async def _unstorable_value(_request: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL cannot hold (a NUL character, a lone surrogate): the caller's fault."""
    log.info("unstorable value refused", extra={"detail": type(exc).__name__})
    return error_response(422, Reason.INVALID_REQUEST, "the request holds characters not allowed")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, Reason.UNEXPECTED_ERROR, "internal error")
