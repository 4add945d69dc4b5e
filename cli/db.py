"""``vidinsight db``: apply and inspect the PostgreSQL schema migrations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sinks.db import connect
from sinks.migrate import migrate, pending_migrations
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``db migrate`` and ``db status``."""
    parser = subparsers.add_parser("db", help="PostgreSQL schema migrations")
    commands = parser.add_subparsers(dest="db_command", required=True)
    commands.add_parser("migrate", help="apply pending migrations").set_defaults(func=run_migrate)
    commands.add_parser("status", help="list pending migrations").set_defaults(func=run_status)


def run_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations; print each one applied, or "up to date"."""
    try:
        with connect(get_settings()) as conn:
            applied = migrate(conn)
    except VidinsightError as exc:
        return _fail("migrate", exc)
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("up to date")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the pending migrations, or "up to date"; exit 1 if any are pending."""
    try:
        with connect(get_settings()) as conn:
            pending = pending_migrations(conn)
    except VidinsightError as exc:
        return _fail("status", exc)
    for name in pending:
        print(f"pending {name}")
    if not pending:
        print("up to date")
    return 1 if pending else 0


def _fail(command: str, exc: VidinsightError) -> int:
    """One line on stderr instead of a stack trace; exit code 2 for infrastructure errors."""
    print(f"vidinsight db {command}: {exc}", file=sys.stderr)
    return 2
