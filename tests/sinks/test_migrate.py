"""Migrations: applied once, in order, whoever runs them and however often."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from sinks.db import Pool
from sinks.migrate import available_migrations, migrate
from vidinsight.settings import Settings


def test_migrating_an_up_to_date_database_applies_nothing(db_pool: Pool) -> None:
    with db_pool.connection() as conn:
        assert migrate(conn) == []
        assert migrate(conn) == []
        recorded = conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
    assert [r["name"] for r in recorded] == [m.name for m in available_migrations()]


@pytest.fixture
def fresh_schema(settings: Settings) -> Iterator[str]:
    """An empty schema of its own, so migrations can run from scratch on a shared database."""
    schema = f"test_migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _connect_in(settings: Settings, schema: str) -> psycopg.Connection:
    return psycopg.connect(
        settings.database_url, autocommit=True, options=f"-c search_path={schema}"
    )


def test_workers_starting_together_apply_each_migration_exactly_once(
    settings: Settings, fresh_schema: str
) -> None:
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def start_worker() -> None:
        try:
            with _connect_in(settings, fresh_schema) as conn:
                barrier.wait()
                results.append(migrate(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    applied = [name for result in results for name in result]
    assert sorted(applied) == [m.name for m in available_migrations()]
    with _connect_in(settings, fresh_schema) as conn:
        assert migrate(conn) == []
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name IN ('jobs', 'stage_runs', 'audit_log', 'cost_ledger')",
            (fresh_schema,),
        ).fetchone()
    assert tables == (4,)


def test_a_failing_migration_leaves_nothing_half_applied(
    settings: Settings, fresh_schema: str, tmp_path
) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT no_such_column;")
    with _connect_in(settings, fresh_schema) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            migrate(conn, tmp_path)
        names = conn.execute("SELECT name FROM schema_migrations").fetchall()
        half = conn.execute("SELECT to_regclass('half')").fetchone()
    assert names == [("0001_good",)]
    assert half == (None,)
