"""Connections to PostgreSQL: the pool every process shares, and the one error edge.

Every psycopg failure that means "the database is not there right now" (refused or
dropped connections, a restart, a pool that cannot hand out a connection in time) is
translated here, once, into ``TransientError(Reason.DATABASE_UNAVAILABLE)``, so the
stage runtime retries with backoff instead of dead-lettering a healthy message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from vidinsight.errors import Reason, TransientError
from vidinsight.settings import Settings

# A connection whose rows are dicts keyed by column name; every repository takes one.
Connection = psycopg.Connection[DictRow]
Pool = ConnectionPool[Connection]


def create_pool(settings: Settings, *, name: str = "vidinsight", autocommit: bool = False) -> Pool:
    """A pool sized from settings that neither blocks start-up nor hands out dead connections.

    ``open(wait=False)`` lets a worker start while PostgreSQL is still down (the first
    transaction then waits up to ``db_pool_timeout_seconds``); checking each connection
    on checkout replaces the ones a PostgreSQL restart left broken.

    ``autocommit`` is for work of one statement per checkout (``statement``), where a
    BEGIN, a COMMIT and the check would quadruple the round trips; its connections are
    not checked: one a restart broke fails its statement as ``database_unavailable``
    (which callers retry) and is discarded.
    """
    pool: Pool = ConnectionPool(
        settings.database_url,
        connection_class=psycopg.Connection[DictRow],
        kwargs={**_connection_kwargs(settings), "autocommit": autocommit},
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        check=None if autocommit else ConnectionPool.check_connection,
        name=name,
        open=False,
    )
    pool.open(wait=False)
    return pool


def _connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments of every connection: dict rows and a bounded connect attempt."""
    return {
        "row_factory": dict_row,
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "vidinsight",
    }


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn "database unreachable" failures into ``TransientError(DATABASE_UNAVAILABLE)``."""
    try:
        yield
    except PoolTimeout as exc:
        raise TransientError(
            Reason.DATABASE_UNAVAILABLE, f"no connection from the pool in time ({_first_line(exc)})"
        ) from exc
    except psycopg.OperationalError as exc:
        raise TransientError(Reason.DATABASE_UNAVAILABLE, _first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    """libpq messages span lines; logs and CLI errors want one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def transaction(pool: Pool) -> Iterator[Connection]:
    """A pooled connection inside one transaction: committed on success, rolled back on error.

    Repository functions take this connection so a caller composes result upserts,
    the stage run record and the audit entry into one atomic unit.
    """
    with translate_errors(), pool.connection() as conn, conn.transaction():
        yield conn


@contextmanager
def statement(pool: Pool) -> Iterator[Connection]:
    """A connection of an ``autocommit`` pool: each statement is its own transaction."""
    with translate_errors(), pool.connection() as conn:
        yield conn


@contextmanager
def connect(settings: Settings) -> Iterator[Connection]:
    """One unpooled connection, for short-lived commands such as ``vidinsight db migrate``.

    The connection is in autocommit mode: whoever uses it opens its own transactions
    (``migrate`` opens one per migration).
    """
    with translate_errors():
        conn = psycopg.Connection.connect(
            settings.database_url, autocommit=True, **_connection_kwargs(settings)
        )
        with conn:
            yield conn
