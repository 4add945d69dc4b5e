"""Stored responses of deterministic LLM calls, so a rerun does not pay twice.

The key is computed by the inference layer (a hash of model, prompt and parameters);
this module only stores and finds. The first response stored for a key wins, so two
workers racing on the same prompt agree on one answer.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection


def get_cached(conn: Connection, cache_key: str) -> Any | None:
    """The cached response for ``cache_key`` (counting the hit), or None."""
    row = conn.execute(
        "UPDATE llm_cache SET hits = hits + 1 WHERE cache_key = %s RETURNING response",
        (cache_key,),
    ).fetchone()
    return None if row is None else row["response"]


def put_cached(conn: Connection, cache_key: str, model: str, response: Any) -> bool:
    """Store a response unless one is already stored; True if this one was stored."""
    row = conn.execute(
        "INSERT INTO llm_cache (cache_key, model, response) VALUES (%s, %s, %s)"
        " ON CONFLICT (cache_key) DO NOTHING RETURNING cache_key",
        (cache_key, model, Jsonb(response)),
    ).fetchone()
    return row is not None
