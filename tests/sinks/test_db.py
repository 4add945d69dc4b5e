"""The connection edge: a down database is a transient error, and the pool heals itself."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from sinks.db import connect, create_pool, transaction
from vidinsight.errors import Reason, TransientError
from vidinsight.settings import Settings


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _down_settings() -> Settings:
    url = f"postgresql://vidinsight:vidinsight@127.0.0.1:{_closed_port()}/vidinsight"
    return Settings(database_url=url, db_pool_timeout_seconds=1.0, db_connect_timeout_seconds=1)


def test_a_down_database_does_not_block_start_up_and_raises_a_transient_error() -> None:
    started = time.monotonic()
    pool = create_pool(_down_settings())
    try:
        assert time.monotonic() - started < 0.5
        with pytest.raises(TransientError) as caught, transaction(pool) as conn:
            conn.execute("SELECT 1")
        assert caught.value.reason is Reason.DATABASE_UNAVAILABLE
        assert time.monotonic() - started < 5
    finally:
        pool.close()


def test_a_single_connection_to_a_down_database_raises_a_transient_error() -> None:
    with pytest.raises(TransientError) as caught, connect(_down_settings()):
        pass
    assert caught.value.reason is Reason.DATABASE_UNAVAILABLE
    assert "\n" not in str(caught.value)


def test_the_pool_replaces_connections_killed_by_a_database_restart(settings: Settings) -> None:
    pool = create_pool(settings.model_copy(update={"db_pool_min_size": 1, "db_pool_max_size": 1}))
    try:
        with transaction(pool) as conn:
            first = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert first is not None
        first_pid = first["pid"]
        with psycopg.connect(settings.database_url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
        time.sleep(0.2)
        with transaction(pool) as conn:
            second = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert second is not None and second["pid"] != first_pid
    finally:
        pool.close()
