"""``vidinsight dlq list|replay STAGE``: see why messages were parked, and re-drive them."""

from __future__ import annotations

import argparse
import datetime as dt

from schemas.codec import Codec
from sinks.db import create_pool
from streams import dead_letters
from topics.catalogue import dlq_topic
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings

ROW = "{:>8}  {:19}  {:36}  {:22}  {:>5}  {}"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dlq", help="list or replay a stage's dead letters")
    actions = parser.add_subparsers(dest="dlq_action", required=True)
    for name, help_text in (
        ("list", "show dead letters and their reasons"),
        ("replay", "re-drive dead letters to the stage's input topic"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("stage")
        action.add_argument("--reason", help="only dead letters with this reason code")
        action.add_argument("--job", help="only dead letters of this job id")
        action.add_argument("--topic", help="the DLQ topic (default: vi.<stage>.dlq)")
        action.set_defaults(func=list_letters if name == "list" else replay_letters)


def _records(args: argparse.Namespace) -> list[dead_letters.DeadLetterRecord]:
    settings = get_settings()
    topic = args.topic or dlq_topic(args.stage)
    codec = Codec(settings.registry_url)
    return [
        r
        for r in dead_letters.read(settings, codec, topic)
        if dead_letters.matches(r, args.reason, args.job)
    ]


def list_letters(args: argparse.Namespace) -> int:
    try:
        records = _records(args)
    except (VidinsightError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    print(ROW.format("offset", "dead-lettered at", "job", "reason", "tries", "exception"))
    for r in records:
        v = r.value
        at = dt.datetime.fromtimestamp(v["dead_lettered_at_ms"] / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        where = f"{r.partition}:{r.offset}"
        error = f"{v['exception_type']}: {v['exception_message'][:80]}"
        print(ROW.format(where, at, v.get("job_id") or "-", v["reason"], v["attempts"], error))
    print(f"{len(records)} dead letter(s)")
    return 0


def replay_letters(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        records = _records(args)
        with create_pool(settings, name="dlq-replay") as pool:
            sent = dead_letters.replay(settings, pool, args.stage, records)
    except (VidinsightError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    print(f"replayed {sent} dead letter(s) to their original topics")
    return 0
