"""``vidinsight db``: apply and inspect the PostgreSQL schema migrations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from sinks.db import Connection, connect
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
    return _report("migrate", migrate, "applied", exit_if_any=0)


def run_status(args: argparse.Namespace) -> int:
    """Print the pending migrations, or "up to date"; exit 1 if any are pending."""
    return _report("status", pending_migrations, "pending", exit_if_any=1)


def _report(
    command: str, action: Callable[[Connection], list[str]], verb: str, exit_if_any: int
) -> int:
    """Run ``action`` on a connection and print one line per migration it names."""
    try:
        with connect(get_settings()) as conn:
            names = action(conn)
    except VidinsightError as exc:
        return _fail(command, exc)
    for name in names:
        print(f"{verb} {name}")
    if not names:
        print("up to date")
    return exit_if_any if names else 0


def _fail(command: str, exc: VidinsightError) -> int:
    """One line on stderr instead of a stack trace; exit code 2 for infrastructure errors."""
    print(f"vidinsight db {command}: {exc}", file=sys.stderr)
    return 2
