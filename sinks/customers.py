"""Customers and their API keys.

A key is shown once, when it is issued; only its SHA-256 is stored, so a leaked
database does not leak working keys. Keys are long random tokens, so an unsalted
hash is enough to look them up in one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from sinks.db import Connection

API_KEY_PREFIX = "vi_"


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
