"""Stored answers of LLM calls, and what the calls that produced them cost.

The key is computed by the inference layer (a hash of the job, model, prompt and
parameters); this module only stores and finds. The first answer stored for a key wins,
so two deliveries racing on the same call agree on one answer. The cost events stored
with it are re-emitted on every hit: a delivery that crashed after paying and storing,
before its cost events reached the ledger, still bills the job for the paid calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer and the cost events of the paid calls that produced it."""

    response: Any
    cost_events: list[dict[str, Any]]


def get_cached(conn: Connection, cache_key: str) -> CachedAnswer | None:
    """The cached answer for ``cache_key`` (counting the hit), or None."""
    row = conn.execute(
        "UPDATE llm_cache SET hits = hits + 1 WHERE cache_key = %s RETURNING response, cost_events",
        (cache_key,),
    ).fetchone()
    return None if row is None else CachedAnswer(row["response"], row["cost_events"])


def put_cached(
    conn: Connection,
    cache_key: str,
    model: str,
    response: Any,
    cost_events: list[dict[str, Any]],
) -> bool:
    """Store an answer and its cost events unless one is already stored; True if stored."""
    row = conn.execute(
        "INSERT INTO llm_cache (cache_key, model, response, cost_events)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (cache_key) DO NOTHING RETURNING cache_key",
        (cache_key, model, Jsonb(response), Jsonb(cost_events)),
    ).fetchone()
    return row is not None
