"""Apply the versioned SQL migrations in ``sinks/migrations/`` at start-up.

Every worker calls ``migrate`` when it starts, so many may call it at the same moment:
each migration runs in its own transaction holding a transaction-scoped advisory lock,
and re-checks ``schema_migrations`` under that lock, so each file is applied exactly
once and a half-applied migration is impossible (its transaction rolls back whole).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import scalar_row

from sinks.db import connect
from vidinsight.errors import TransientError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any fixed bigint shared by every process of the platform; spells "vimigr".
MIGRATION_LOCK_KEY = 0x76696D696772


@dataclass(frozen=True)
class Migration:
    """One SQL file; its name (the file name without ``.sql``) is its identity."""

    name: str
    sql: bytes


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a misnamed file is an error, not skipped."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        if not MIGRATION_FILE.match(path.name):
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        migrations.append(Migration(name=path.stem, sql=path.read_bytes()))
    return migrations


def migrate(conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in order; return the names applied ([] if up to date).

    ``conn`` must not be inside a transaction already, or the per-migration
    transactions become savepoints of the caller's.
    """
    _ensure_migrations_table(conn)
    applied = []
    for migration in available_migrations(directory):
        with conn.transaction():
            _lock(conn)
            if migration.name in _applied_names(conn):
                continue
            conn.execute(migration.sql)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (migration.name,))
        applied.append(migration.name)
    return applied


def migrate_when_reachable(settings: Settings, stage: str) -> None:
    """Apply migrations at a process's start-up, waiting out a database not up yet.

    A worker started before PostgreSQL (or during its restart) waits instead of exiting;
    its messages wait in Kafka meanwhile.
    """
    attempt = 0
    while True:
        try:
            with connect(settings) as conn:
                migrate(conn)
            return
        except TransientError as exc:
            attempt += 1
            log.warning(
                "database not reachable at start-up: %s",
                exc.message,
                extra={"reason": exc.reason, "attempt": attempt, "stage": stage},
            )
            time.sleep(min(settings.transient_backoff_max_seconds, 0.5 * attempt))


def pending_migrations(
    conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Names of the migrations not yet applied, without applying them."""
    _ensure_migrations_table(conn)
    with conn.transaction():
        done = _applied_names(conn)
    return [m.name for m in available_migrations(directory) if m.name not in done]


def _ensure_migrations_table(conn: psycopg.Connection[Any]) -> None:
    """Create the bookkeeping table under the lock (two concurrent CREATEs would collide)."""
    with conn.transaction():
        _lock(conn)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )


def _lock(conn: psycopg.Connection[Any]) -> None:
    """Serialise migrators across processes until the current transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


def _applied_names(conn: psycopg.Connection[Any]) -> set[str]:
    """Names recorded in ``schema_migrations``, whatever the connection's row factory."""
    with conn.cursor(row_factory=scalar_row) as cur:
        cur.execute("SELECT name FROM schema_migrations")
        return set(cur.fetchall())
