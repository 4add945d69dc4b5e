"""``vidinsight db migrate`` as an operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from sinks.db import Pool
from vidinsight.settings import REPO_ROOT, Settings


def _run(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VI_DATABASE_URL": database_url, "VI_DB_CONNECT_TIMEOUT_SECONDS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_on_an_up_to_date_database_says_so(settings: Settings, db_pool: Pool) -> None:
    result = _run("db", "migrate", database_url=settings.database_url)
    assert (result.returncode, result.stdout) == (0, "up to date\n")


def test_migrate_against_a_down_database_prints_one_line_not_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _run("db", "migrate", database_url=f"postgresql://u:p@127.0.0.1:{port}/db")
    assert result.returncode == 2
    assert result.stderr.startswith("vidinsight db migrate: database_unavailable:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
