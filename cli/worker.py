"""``vidinsight worker STAGE``: run one stage; processes of one stage share its consumer group."""

from __future__ import annotations

import argparse

from streams.runtime import runner
from streams.stages import load_stage, stage_named
from vidinsight.settings import get_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("worker", help="run one pipeline stage until SIGTERM")
    parser.add_argument("stage", nargs="?", help="stage name (ingest, preprocess, ...)")
    parser.add_argument(
        "--stage-ref",
        help="run the Stage at module:attribute instead (an extension or a test stage)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.stage) == bool(args.stage_ref):
        print("error: give a stage name or --stage-ref, not both or neither")
        return 2
    try:
        stage = load_stage(args.stage_ref) if args.stage_ref else stage_named(args.stage)
    except (KeyError, ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"error: {exc}")
        return 2
    return runner.run(stage, get_settings())
