"""``vidinsight costs report`` (spend from the spend tables) and ``vidinsight costs-aggregator``."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date
from typing import Any

from sinks.db import connect
from streams.costs.report import DIMENSIONS, spend_report
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings

MICROS_PER_USD = 1_000_000


def register(subparsers: Any) -> None:
    """Add ``costs report`` and ``costs-aggregator``."""
    parser = subparsers.add_parser("costs", help="spend reports")
    commands = parser.add_subparsers(dest="costs_command", required=True)
    report = commands.add_parser("report", help="spend by stage, job, day or model")
    report.add_argument("--customer", help="only this customer")
    report.add_argument("--job", help="only this job")
    report.add_argument("--from", dest="from_day", type=date.fromisoformat, help="first UTC day")
    report.add_argument("--to", dest="to_day", type=date.fromisoformat, help="last UTC day")
    report.add_argument("--by", choices=DIMENSIONS, default="stage")
    report.add_argument("--format", choices=("table", "csv"), default="table")
    report.set_defaults(func=run_report)
    aggregator = subparsers.add_parser(
        "costs-aggregator", help="run the cost aggregator (Faust) until SIGTERM"
    )
    aggregator.set_defaults(func=run_aggregator)


def run_aggregator(args: argparse.Namespace) -> int:
    """Start the aggregator; imported here so ``costs report`` does not load Faust."""
    from streams.costs.runner import run

    return run(get_settings())


def run_report(args: argparse.Namespace) -> int:
    """Print the report; exit 2 with one line on stderr if the database is unreachable."""
    try:
        with connect(get_settings()) as conn:
            rows = spend_report(conn, args.by, args.customer, args.from_day, args.to_day, args.job)
    except VidinsightError as exc:
        print(f"vidinsight costs report: {exc}", file=sys.stderr)
        return 2
    header = ["customer_id", args.by, "events", "amount_usd"]
    lines = [
        [r["customer_id"], str(r["key"]), str(r["event_count"]), usd(r["amount_usd_micros"])]
        for r in rows
    ]
    total = sum(int(r["amount_usd_micros"]) for r in rows)
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
    else:
        print_table(
            header, [*lines, ["TOTAL", "", str(sum(r["event_count"] for r in rows)), usd(total)]]
        )
    return 0


def usd(micros: int) -> str:
    """Micro-dollars as an exact decimal USD string (integer arithmetic, no float)."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(int(micros)), MICROS_PER_USD)
    return f"{sign}{whole}.{fraction:06d}"


def print_table(header: list[str], lines: list[list[str]]) -> None:
    """Left-aligned text columns, amounts right-aligned."""
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1].rjust(widths[-1])]))
