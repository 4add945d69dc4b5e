"""``vidinsight uploads``: run an upload sweep now, set a customer's upload quotas."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from gateway.upload_storage import sweep
from schemas.codec import Codec
from sinks.blobs import BlobStore
from sinks.db import connect, create_pool
from sinks.uploads import set_upload_quota
from streams.runtime.clients import make_producer
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings

DEFAULT = "default"


def register(subparsers: Any) -> None:
    """Add ``uploads expire`` and ``uploads set-quota``."""
    parser = subparsers.add_parser("uploads", help="upload expiry, storage billing and quotas")
    commands = parser.add_subparsers(dest="uploads_command", required=True)
    expire = commands.add_parser(
        "expire",
        help="one sweep now: delete expired uploads, bill storage, produce the charges",
    )
    expire.set_defaults(func=run_expire)
    quota = commands.add_parser(
        "set-quota", help="a customer's upload quotas ('default': the VI_UPLOAD_MAX_* default)"
    )
    quota.add_argument("customer")
    quota.add_argument("--count", required=True, type=_limit, help="uploads held at once")
    quota.add_argument("--bytes", required=True, type=_limit, help="bytes held at once")
    quota.set_defaults(func=run_set_quota)


def _limit(text: str) -> int | None:
    """A non-negative whole number, or None for 'default'."""
    if text == DEFAULT:
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number or '{DEFAULT}': {text!r}")
    return int(text)


def run_expire(args: argparse.Namespace) -> int:
    """Print what the pass did as JSON; exit 2 if PostgreSQL is unreachable or charges
    remain unpublished (Kafka did not acknowledge them within
    ``VI_PRODUCER_FLUSH_TIMEOUT_SECONDS``; the next pass produces them).

    Safe beside the gateways' own sweepers: only one pass runs at a time (``skipped``).
    """
    settings = get_settings()
    pool = create_pool(settings.model_copy(update={"db_pool_min_size": 0}), name="uploads-cli")
    producer = make_producer(settings)
    try:
        report = sweep(
            settings,
            pool,
            BlobStore.from_settings(settings),
            producer,
            Codec(settings.registry_url),
        )
    except VidinsightError as exc:
        print(f"vidinsight uploads expire: {exc}", file=sys.stderr)
        return 2
    finally:
        producer.flush(settings.producer_flush_timeout_seconds)
        pool.close()
    print(json.dumps(asdict(report)))
    if report.unpublished:
        print(
            f"vidinsight uploads expire: {report.unpublished} storage charges not acknowledged"
            " by Kafka; they stay in upload_charges for the next pass",
            file=sys.stderr,
        )
        return 2
    return 0


def run_set_quota(args: argparse.Namespace) -> int:
    """Set the quotas; exit 1 for an unknown customer, 2 if PostgreSQL is unreachable."""
    try:
        with connect(get_settings()) as conn:
            found = set_upload_quota(conn, args.customer, args.count, args.bytes)
    except VidinsightError as exc:
        print(f"vidinsight uploads set-quota: {exc}", file=sys.stderr)
        return 2
    if not found:
        print(f"vidinsight uploads set-quota: no customer {args.customer}", file=sys.stderr)
        return 1
    print(json.dumps({"customer_id": args.customer, "max_count": args.count,
                      "max_bytes": args.bytes}))  # fmt: skip
    return 0
