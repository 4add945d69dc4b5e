"""``vidinsight topics apply|list``: make the cluster match the catalogue, or show the drift."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from schemas.registry import registry_client
from topics.admin import RDKAFKA_LOGGER, TopicState, admin_client, apply, describe
from topics.catalogue import catalogue
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``topics`` with its ``apply`` and ``list`` subcommands."""
    settings = get_settings()
    parser = subparsers.add_parser("topics", help="create and reconcile the topic catalogue")
    actions = parser.add_subparsers(dest="topics_command", required=True)
    for name, func, help_text in (
        ("apply", run_apply, "create missing topics, fix drift, register schemas"),
        ("list", run_list, "show the catalogue next to the cluster"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap")
        action.add_argument("--registry-url", default=settings.registry_url, help="schema registry")
        action.set_defaults(func=func)


def _quiet_logging() -> None:
    """Warnings as one line each; librdkafka's retry chatter hidden (errors are reported)."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    RDKAFKA_LOGGER.setLevel(logging.CRITICAL)


def run_apply(args: argparse.Namespace) -> int:
    """Apply the catalogue; print each change, or "no changes"."""
    _quiet_logging()
    try:
        admin = admin_client(args.bootstrap)
        changes = apply(admin, registry_client(args.registry_url), catalogue())
    except VidinsightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(change)
    if not changes:
        print("no changes")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print one line per catalogue topic: wanted vs actual partitions, replication, drift."""
    _quiet_logging()
    try:
        rows = describe(admin_client(args.bootstrap), catalogue())
    except VidinsightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows))
    return 0


def format_table(rows: list[TopicState]) -> str:
    """A fixed-width table: topic, state, partitions and replication as actual/wanted, drift."""
    header = ("TOPIC", "STATE", "PARTITIONS", "REPLICATION", "CONFIG DRIFT")
    lines = [header] + [_row(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    ).rstrip()


def _row(row: TopicState) -> tuple[str, str, str, str, str]:
    state = "ok" if row.in_sync else ("missing" if not row.exists else "drift")
    drift = ", ".join(f"{name}={was} (wants {wanted})" for name, wanted, was in row.config_drift)
    return (
        row.name,
        state,
        f"{_count(row.partitions_actual)}/{row.partitions_wanted}",
        f"{_count(row.replication_actual)}/{row.replication_wanted}",
        drift or "-",
    )


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
