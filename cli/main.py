"""The ``vidinsight`` command: one entry point, one subcommand module per concern."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# Each module exposes ``register(subparsers)``, which adds its subcommand and sets
# ``func`` on its parser; the function returns the process exit code.
SUBCOMMAND_MODULES = (
    "cli.topics",
    "cli.db",
    "cli.worker",
    "cli.dlq",
    "cli.costs",
    "cli.customers",
    "cli.gateway",
    "cli.submit",
    "cli.jobs",
    "cli.uploads",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, assembled from every subcommand module."""
    parser = argparse.ArgumentParser(prog="vidinsight", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
