"""``vidinsight customers``: create customers, issue and revoke API keys, rotate webhook
secrets, set monthly budgets."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sinks.customers import (
    create_customer,
    get_customer,
    issue_key,
    new_webhook_secret,
    revoke_key,
    set_budget,
)
from sinks.db import connect
from vidinsight.errors import VidinsightError
from vidinsight.settings import get_settings


def register(subparsers: Any) -> None:
    """Add ``customers create``, ``issue-key``, ``revoke-key``, ``rotate-webhook-secret``
    and ``set-budget``."""
    parser = subparsers.add_parser("customers", help="customers, API keys and budgets")
    commands = parser.add_subparsers(dest="customers_command", required=True)
    create = commands.add_parser(
        "create", help="create a customer; prints its id, API key and webhook secret"
    )
    create.add_argument("name")
    create.set_defaults(func=run_create)
    issue = commands.add_parser("issue-key", help="another API key for a customer (rotation)")
    issue.add_argument("customer")
    issue.set_defaults(func=run_issue_key)
    revoke = commands.add_parser("revoke-key", help="revoke an API key from now on")
    revoke.add_argument("key")
    revoke.set_defaults(func=run_revoke)
    rotate = commands.add_parser(
        "rotate-webhook-secret",
        help="a new webhook secret; the old ones sign beside it for --overlap-hours",
    )
    rotate.add_argument("customer")
    rotate.add_argument(
        "--overlap-hours",
        type=float,
        default=24.0,
        help="how long the previous secrets still sign (0: stop at once, for a leaked one)",
    )
    rotate.set_defaults(func=run_rotate_webhook_secret)
    budget = commands.add_parser("set-budget", help="set a monthly budget in USD ('none' clears)")
    budget.add_argument("customer")
    budget.add_argument("usd")
    budget.set_defaults(func=run_set_budget)


def usd_to_micros(text: str) -> int:
    """An exact USD amount ("12.50") as integer micro-dollars; ValueError if not exact or < 0."""
    try:
        amount = Decimal(text) * 1_000_000
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {text!r}") from exc
    if not amount.is_finite() or amount < 0 or amount != amount.to_integral_value():
        raise ValueError(f"not a non-negative amount with at most 6 decimals: {text!r}")
    return int(amount)


def run_create(args: argparse.Namespace) -> int:
    """Print ``{"customer_id", "api_key", "webhook_secret"}``; both secrets are shown only
    this once. Without ``VI_WEBHOOK_SECRETS_KEY`` the webhook secret is null (say so)."""
    key = get_settings().webhook_secrets_key.get_secret_value()
    try:
        with connect(get_settings()) as conn, conn.transaction():
            customer_id, api_key = create_customer(conn, args.name)
            webhook_secret = new_webhook_secret(conn, customer_id, key)[0] if key else None
    except VidinsightError as exc:
        return _fail("create", exc)
    if webhook_secret is None:
        print(
            "vidinsight customers create: VI_WEBHOOK_SECRETS_KEY is not set: no webhook secret"
            " (webhooks are not sent); run rotate-webhook-secret once it is",
            file=sys.stderr,
        )
    output = {"customer_id": customer_id, "api_key": api_key, "webhook_secret": webhook_secret}
    print(json.dumps(output))
    return 0


def run_issue_key(args: argparse.Namespace) -> int:
    """Print a new key beside the customer's others; revoke the old one once clients moved."""
    try:
        with connect(get_settings()) as conn:
            if get_customer(conn, args.customer) is None:
                print(
                    f"vidinsight customers issue-key: no customer {args.customer}", file=sys.stderr
                )
                return 1
            api_key = issue_key(conn, args.customer)
    except VidinsightError as exc:
        return _fail("issue-key", exc)
    print(json.dumps({"customer_id": args.customer, "api_key": api_key}))
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke the key; exit 1 if it was unknown or already revoked."""
    try:
        with connect(get_settings()) as conn:
            revoked = revoke_key(conn, args.key)
    except VidinsightError as exc:
        return _fail("revoke-key", exc)
    print("revoked" if revoked else "no such active key")
    return 0 if revoked else 1


def run_rotate_webhook_secret(args: argparse.Namespace) -> int:
    """Print the new secret and until when the old ones sign; exit 1 for an unknown
    customer, 2 without ``VI_WEBHOOK_SECRETS_KEY`` or a negative overlap."""
    key = get_settings().webhook_secrets_key.get_secret_value()
    if not key or args.overlap_hours < 0:
        problem = "--overlap-hours must be >= 0" if key else "VI_WEBHOOK_SECRETS_KEY is not set"
        print(f"vidinsight customers rotate-webhook-secret: {problem}", file=sys.stderr)
        return 2
    try:
        with connect(get_settings()) as conn:
            if get_customer(conn, args.customer) is None:
                print(
                    f"vidinsight customers rotate-webhook-secret: no customer {args.customer}",
                    file=sys.stderr,
                )
                return 1
            secret, until = new_webhook_secret(
                conn, args.customer, key, timedelta(hours=args.overlap_hours)
            )
    except VidinsightError as exc:
        return _fail("rotate-webhook-secret", exc)
    print(
        json.dumps(
            {
                "customer_id": args.customer,
                "webhook_secret": secret,
                "previous_secrets_sign_until": until.isoformat() if until else None,
            }
        )
    )
    return 0


def run_set_budget(args: argparse.Namespace) -> int:
    """Set the monthly budget; exit 1 for an unknown customer, 2 for a bad amount."""
    try:
        micros = None if args.usd.lower() == "none" else usd_to_micros(args.usd)
    except ValueError as exc:
        print(f"vidinsight customers set-budget: {exc}", file=sys.stderr)
        return 2
    try:
        with connect(get_settings()) as conn:
            found = set_budget(conn, args.customer, micros)
    except VidinsightError as exc:
        return _fail("set-budget", exc)
    if not found:
        print(f"vidinsight customers set-budget: no customer {args.customer}", file=sys.stderr)
        return 1
    print(json.dumps({"customer_id": args.customer, "monthly_budget_usd_micros": micros}))
    return 0


def _fail(command: str, exc: VidinsightError) -> int:
    """One line on stderr instead of a stack trace; exit code 2 for infrastructure errors."""
    print(f"vidinsight customers {command}: {exc}", file=sys.stderr)
    return 2
