"""Who is calling: an API key or a Firebase ID token in ``Authorization: Bearer``.

API keys start with ``vi_`` and are looked up by their hash; anything shaped like a
JWT is verified as a Firebase ID token and its uid mapped to a customer. Every failure
is the same 401 (missing, malformed, expired, wrong audience, revoked), so the answer
tells an attacker nothing about which check failed; the log says which.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api_errors import ApiError
from gateway.context import Context, GatewayContext
from gateway.firebase import InvalidToken
from sinks.customers import API_KEY_PREFIX, customer_for_firebase_uid, customer_for_key
from sinks.db import transaction
from vidinsight.errors import Reason

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="An API key (vi_...) or a Firebase ID token")


def _unauthenticated(why: str) -> ApiError:
    log.info("authentication refused", extra={"detail": why})
    return ApiError(
        Reason.UNAUTHENTICATED,
        "a valid API key or Firebase ID token is required",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def current_customer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ctx: Context,
) -> str:
    """The customer_id of the caller; 401 unless the credential is valid."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthenticated("no bearer credential")
    token = credentials.credentials.strip()
    if token.startswith(API_KEY_PREFIX):
        customer_id = await run_in_threadpool(_customer_for_key, ctx, token)
    elif token.count(".") == 2:
        customer_id = await run_in_threadpool(_customer_for_token, ctx, token)
    else:
        raise _unauthenticated("credential is neither an API key nor a JWT")
    request.state.customer_id = customer_id
    return customer_id


def _customer_for_key(ctx: GatewayContext, api_key: str) -> str:
    with transaction(ctx.pool) as conn:
        customer_id = customer_for_key(conn, api_key)
    if customer_id is None:
        raise _unauthenticated("unknown or revoked API key")
    return customer_id


def _customer_for_token(ctx: GatewayContext, token: str) -> str:
    try:
        uid = ctx.firebase.uid(token)
    except InvalidToken as exc:
        raise _unauthenticated(f"invalid Firebase token: {exc}") from exc
    with transaction(ctx.pool) as conn:
        customer_id = customer_for_firebase_uid(conn, uid)
    if customer_id is None:
        raise _unauthenticated("no customer for this Firebase user")
    return customer_id


# A route parameter of this type receives the authenticated caller's customer_id.
CustomerId = Annotated[str, Depends(current_customer)]
