"""Who is calling: an API key or a Firebase ID token in ``Authorization: Bearer``.

API keys start with ``vi_`` and are looked up by their hash; anything shaped like a
JWT is verified as a Firebase ID token and its uid mapped to a customer. Every failure
is the same 401 (missing, malformed, expired, wrong audience, revoked), so the answer
tells an attacker nothing about which check failed; the log says which.

The edge (``gateway/edge.py``) calls ``authenticate`` before a byte of the body is read
and leaves the ``Caller`` in the request's state; the route dependency hands it on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from gateway.api_errors import ApiError
from gateway.context import Context, GatewayContext
from gateway.firebase import InvalidToken
from sinks.customers import (
    API_KEY_PREFIX,
    customer_for_firebase_uid,
    customer_for_key,
    hash_key,
)
from sinks.db import transaction
from vidinsight.errors import Reason

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="An API key (vi_...) or a Firebase ID token")
# The request-state key under which the edge leaves the authenticated caller.
CALLER_STATE = "caller"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its customer and, for an API key, the key's stored hash
    (so a long-lived stream can check later that the key has not been revoked)."""

    customer_id: str
    key_sha256: bytes | None


def _unauthenticated(why: str) -> ApiError:
    log.info("authentication refused", extra={"detail": why})
    return ApiError(
        Reason.UNAUTHENTICATED,
        "a valid API key or Firebase ID token is required",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticate(ctx: GatewayContext, authorization: str | None) -> Caller:
    """The caller an ``Authorization`` header names; 401 ``ApiError`` unless it is valid.

    May raise ``TransientError`` when PostgreSQL or Google's key server is down.
    """
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated("no bearer credential")
    if token.startswith(API_KEY_PREFIX):
        return await run_in_threadpool(_caller_for_key, ctx, token)
    if token.count(".") == 2:
        return await run_in_threadpool(_caller_for_token, ctx, token)
    raise _unauthenticated("credential is neither an API key nor a JWT")


async def current_caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ctx: Context,
) -> Caller:
    """The caller the edge authenticated; a route the edge was not told about checks here.

    ``_credentials`` declares the bearer scheme in the OpenAPI document.
    """
    caller = request.scope.get("state", {}).get(CALLER_STATE)
    if not isinstance(caller, Caller):
        caller = await authenticate(ctx, request.headers.get("authorization"))
    request.state.customer_id = caller.customer_id
    return caller


async def current_customer(caller: Annotated[Caller, Depends(current_caller)]) -> str:
    """The customer_id of the caller; 401 unless the credential is valid."""
    return caller.customer_id


def _caller_for_key(ctx: GatewayContext, api_key: str) -> Caller:
    with transaction(ctx.pool) as conn:
        customer_id = customer_for_key(conn, api_key)
    if customer_id is None:
        raise _unauthenticated("unknown or revoked API key")
    return Caller(customer_id, hash_key(api_key))


def _caller_for_token(ctx: GatewayContext, token: str) -> Caller:
    try:
        uid = ctx.firebase.uid(token)
    except InvalidToken as exc:
        raise _unauthenticated(f"invalid Firebase token: {exc}") from exc
    with transaction(ctx.pool) as conn:
        customer_id = customer_for_firebase_uid(conn, uid)
    if customer_id is None:
        raise _unauthenticated("no customer for this Firebase user")
    return Caller(customer_id, None)


# A route parameter of this type receives the authenticated caller's customer_id.
CustomerId = Annotated[str, Depends(current_customer)]
# A route parameter of this type receives the authenticated caller (customer and key).
CallerDep = Annotated[Caller, Depends(current_caller)]
