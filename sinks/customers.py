"""Customers, their API keys and their webhook signing secrets.

A key is shown once, when it is issued; only its SHA-256 is stored, so a leaked
database does not leak working keys. Keys are long random tokens, so an unsalted
hash is enough to look them up in one indexed query.

A webhook secret is shown once too, but the platform signs with it, so it cannot be
hashed: it is derived from ``VI_WEBHOOK_SECRETS_KEY``, the customer id and a random
nonce, and only the nonce is stored (docs/decisions/0010-webhook-signing.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sinks.db import Connection

API_KEY_PREFIX = "vi_"
WEBHOOK_SECRET_PREFIX = "whsec_"
# Domain separation: this key derives webhook secrets and nothing else.
_WEBHOOK_SECRET_LABEL = b"vidinsight webhook secret v1"


def _new_id(prefix: str) -> str:
    """A random identifier with a readable type prefix (``cus_...``, ``key_...``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def hash_key(api_key: str) -> bytes:
    """The stored form of an API key."""
    return hashlib.sha256(api_key.encode()).digest()


def create_customer(
    conn: Connection,
    name: str,
    *,
    monthly_budget_usd_micros: int | None = None,
    firebase_uid: str | None = None,
) -> tuple[str, str]:
    """Create a customer with a first API key; return ``(customer_id, api_key)``."""
    customer_id = _new_id("cus")
    conn.execute(
        "INSERT INTO customers (customer_id, name, monthly_budget_usd_micros, firebase_uid)"
        " VALUES (%s, %s, %s, %s)",
        (customer_id, name, monthly_budget_usd_micros, firebase_uid),
    )
    return customer_id, issue_key(conn, customer_id)


def issue_key(conn: Connection, customer_id: str) -> str:
    """Issue another API key for a customer (rotation); return the key itself."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_keys (key_id, customer_id, key_sha256) VALUES (%s, %s, %s)",
        (_new_id("key"), customer_id, hash_key(api_key)),
    )
    return api_key


def customer_for_key(conn: Connection, api_key: str) -> str | None:
    """The customer an API key belongs to, or None if unknown or revoked."""
    row = conn.execute(
        "SELECT customer_id FROM api_keys WHERE key_sha256 = %s AND revoked_at IS NULL",
        (hash_key(api_key),),
    ).fetchone()
    return None if row is None else str(row["customer_id"])


def active_key_hashes(conn: Connection, key_hashes: list[bytes]) -> set[bytes]:
    """Which of these API key hashes are still active (not revoked)."""
    rows = conn.execute(
        "SELECT key_sha256 FROM api_keys WHERE key_sha256 = ANY(%s) AND revoked_at IS NULL",
        (key_hashes,),
    ).fetchall()
    return {bytes(row["key_sha256"]) for row in rows}


def revoke_key(conn: Connection, api_key: str) -> bool:
    """Revoke a key from now on; True if it was active (revoking twice is harmless)."""
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = now()"
        " WHERE key_sha256 = %s AND revoked_at IS NULL RETURNING key_id",
        (hash_key(api_key),),
    ).fetchone()
    return row is not None


def set_budget(conn: Connection, customer_id: str, monthly_budget_usd_micros: int | None) -> bool:
    """Set (or clear, with None) a customer's monthly budget; False if no such customer."""
    if monthly_budget_usd_micros is not None and not _is_int(monthly_budget_usd_micros):
        raise TypeError("budgets are integer micro-dollars")
    row = conn.execute(
        "UPDATE customers SET monthly_budget_usd_micros = %s"
        " WHERE customer_id = %s RETURNING customer_id",
        (monthly_budget_usd_micros, customer_id),
    ).fetchone()
    return row is not None


def get_customer(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    """The customer's row, or None."""
    return conn.execute(
        "SELECT customer_id, name, created_at, monthly_budget_usd_micros, firebase_uid"
        " FROM customers WHERE customer_id = %s",
        (customer_id,),
    ).fetchone()


def customer_for_firebase_uid(conn: Connection, firebase_uid: str) -> str | None:
    """The customer a signed-in dashboard user belongs to, or None."""
    row = conn.execute(
        "SELECT customer_id FROM customers WHERE firebase_uid = %s", (firebase_uid,)
    ).fetchone()
    return None if row is None else str(row["customer_id"])


def _is_int(value: object) -> bool:
    """True for real integers (bool is an int in Python, but never an amount)."""
    return isinstance(value, int) and not isinstance(value, bool)


def new_webhook_secret(
    conn: Connection, customer_id: str, key: str, overlap: timedelta = timedelta(0)
) -> tuple[str, datetime | None]:
    """A new current webhook secret; return it and when the previous ones stop signing.

    The previous secrets go on signing beside the new one for ``overlap`` (none that
    retires sooner is extended), so the customer's receiver can switch in that window;
    with no overlap they stop at once (a leaked secret). The second value is None when
    the customer had no secret. Rotations of one customer are serialized by a lock.
    """
    if not key:
        raise ValueError("VI_WEBHOOK_SECRETS_KEY is not set")
    nonce = secrets.token_bytes(32)
    with conn.transaction():  # its own, or a savepoint in the caller's
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('webhook_secrets:' || %s, 0))",
            (customer_id,),
        )
        conn.execute(
            "DELETE FROM webhook_secrets WHERE customer_id = %s AND retires_at <= now()",
            (customer_id,),
        )
        retired = conn.execute(
            "UPDATE webhook_secrets"
            " SET retires_at = LEAST(COALESCE(retires_at, 'infinity'), now() + %s)"
            " WHERE customer_id = %s RETURNING retires_at",
            (overlap, customer_id),
        ).fetchall()
        conn.execute(
            "INSERT INTO webhook_secrets (secret_id, customer_id, nonce) VALUES (%s, %s, %s)",
            (_new_id("whk"), customer_id, nonce),
        )
    until = max((row["retires_at"] for row in retired), default=None)
    return webhook_secret(key, customer_id, nonce), until


def webhook_signing_secrets(conn: Connection, customer_id: str, key: str) -> list[str]:
    """The secrets a delivery to the customer is signed with now: the current one first,
    then those still in their overlap window. Empty without a key (nothing may be sent).

    A customer without a current secret (created before secrets existed, or outside the
    CLI) gets one here; an operator hands it over with ``rotate-webhook-secret``.
    """
    if not key:
        return []
    rows = _live_webhook_nonces(conn, customer_id)
    if not rows or rows[0]["retires_at"] is not None:
        conn.execute(
            "INSERT INTO webhook_secrets (secret_id, customer_id, nonce) VALUES (%s, %s, %s)"
            " ON CONFLICT (customer_id) WHERE retires_at IS NULL DO NOTHING",
            (_new_id("whk"), customer_id, secrets.token_bytes(32)),
        )
        rows = _live_webhook_nonces(conn, customer_id)
    return [webhook_secret(key, customer_id, bytes(row["nonce"])) for row in rows]


def webhook_secret(key: str, customer_id: str, nonce: bytes) -> str:
    """The secret a nonce stands for: ``whsec_`` and 32 bytes of HMAC-SHA256 in base64
    (the Standard Webhooks form, so receivers may also use its libraries)."""
    message = b"\0".join((_WEBHOOK_SECRET_LABEL, customer_id.encode(), nonce))
    derived = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(derived).decode()


def _live_webhook_nonces(conn: Connection, customer_id: str) -> list[dict[str, Any]]:
    """The customer's secrets that sign now, the current one (no retires_at) first."""
    return conn.execute(
        "SELECT nonce, retires_at FROM webhook_secrets"
        " WHERE customer_id = %s AND (retires_at IS NULL OR retires_at > now())"
        " ORDER BY retires_at IS NOT NULL, created_at DESC",
        (customer_id,),
    ).fetchall()
