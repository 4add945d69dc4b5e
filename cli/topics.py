"""``vidinsight topics apply|list|render``: make the cluster match the catalogue, show the
drift, or render the catalogue as Kubernetes resources."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from schemas.registry import registry_client
from topics.admin import RDKAFKA_LOGGER, TopicState, admin_client, apply, describe
from topics.catalogue import catalogue
from topics.strimzi import DEFAULT_CLUSTER, render
from vidinsight.errors import VidinsightError
from vidinsight.settings import Settings, get_settings


def register(subparsers: Any) -> None:
    """Add ``topics`` with its ``apply``, ``list`` and ``render`` subcommands."""
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
    _register_render(actions, settings)


def _register_render(actions: Any, settings: Settings) -> None:
    """``topics render --k8s``: sizes default to the settings, so an overlay can ask for others."""
    action = actions.add_parser("render", help="print the catalogue as Kubernetes resources")
    action.add_argument(
        "--k8s",
        action="store_true",
        required=True,
        help="Strimzi KafkaTopic resources (the one format so far)",
    )
    action.add_argument(
        "--partitions",
        type=int,
        default=settings.topic_partitions,
        help="partitions of a pipeline topic (default VI_TOPIC_PARTITIONS)",
    )
    action.add_argument(
        "--replication-factor",
        type=int,
        default=settings.topic_replication_factor,
        help="replicas of every topic (default VI_TOPIC_REPLICATION_FACTOR)",
    )
    action.add_argument(
        "--cluster", default=DEFAULT_CLUSTER, help="the Strimzi Kafka cluster the topics belong to"
    )
    action.set_defaults(func=run_render)


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


def run_render(args: argparse.Namespace) -> int:
    """Print the KafkaTopic YAML of the catalogue sized by the arguments; no cluster is asked."""
    if args.partitions < 1 or args.replication_factor < 1:
        print("error: --partitions and --replication-factor must be at least 1", file=sys.stderr)
        return 2
    sized = get_settings().model_copy(
        update={
            "topic_partitions": args.partitions,
            "topic_replication_factor": args.replication_factor,
        }
    )
    sys.stdout.write(render(catalogue(sized), cluster=args.cluster))
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
