"""Webhook secrets: one set per customer, derived from a key the database does not hold,
rotated with an overlap after which the old secret stops signing."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import timedelta

from sinks.customers import new_webhook_secret, webhook_signing_secrets
from sinks.db import Connection, Pool, transaction

KEY = "sinks-test-webhook-secrets-key"


def _customer() -> str:
    return f"cus_{uuid.uuid4().hex}"


def test_the_database_holds_no_secret_and_no_key_to_derive_it(db: Connection) -> None:
    customer_id = _customer()
    secret, previous = new_webhook_secret(db, customer_id, KEY)
    assert previous is None
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert webhook_signing_secrets(db, customer_id, KEY) == [secret]
    # A reader of every row (text or bytes) finds neither the secret nor its HMAC key...
    raw = base64.b64decode(secret[6:])
    dump = db.execute(
        "SELECT count(*) AS n FROM webhook_secrets w"
        " WHERE w::text LIKE %s OR position(%s IN w.nonce) > 0",
        (f"%{secret[6:]}%", raw),
    ).fetchone()
    assert dump == {"n": 0}
    # ...and without the platform's key the stored nonce gives another secret.
    assert webhook_signing_secrets(db, customer_id, "a key guessed by the reader") != [secret]


def test_each_customer_has_its_own_secret_created_at_its_first_delivery(db: Connection) -> None:
    """A customer without one (from before per-customer secrets, or made outside the CLI)
    gets one on first use, the same one from then on; no key, no secret (nothing is sent)."""
    first, second = _customer(), _customer()
    assert webhook_signing_secrets(db, first, "") == []
    created = webhook_signing_secrets(db, first, KEY)
    assert len(created) == 1
    assert webhook_signing_secrets(db, first, KEY) == created
    assert webhook_signing_secrets(db, second, KEY) != created


def test_a_rotation_signs_with_both_during_the_overlap_and_only_the_new_after(
    db_pool: Pool,
) -> None:
    customer_id = _customer()
    with transaction(db_pool) as conn:
        old, _ = new_webhook_secret(conn, customer_id, KEY)
    with transaction(db_pool) as conn:
        new, until = new_webhook_secret(conn, customer_id, KEY, overlap=timedelta(seconds=2))
        assert webhook_signing_secrets(conn, customer_id, KEY) == [new, old]
    assert until is not None
    deadline = time.monotonic() + 30
    while True:
        with transaction(db_pool) as conn:
            signing = webhook_signing_secrets(conn, customer_id, KEY)
        if signing == [new]:
            break
        assert signing == [new, old], signing
        assert time.monotonic() < deadline, "the old secret still signs 30 s after its overlap"
        time.sleep(0.2)


def test_a_rotation_without_overlap_stops_every_old_secret_at_once(db: Connection) -> None:
    """For a leaked secret: also one still in an earlier rotation's overlap stops."""
    customer_id = _customer()
    first, _ = new_webhook_secret(db, customer_id, KEY)
    second, _ = new_webhook_secret(db, customer_id, KEY, overlap=timedelta(hours=24))
    third, until = new_webhook_secret(db, customer_id, KEY)
    assert until is not None
    assert len({first, second, third}) == 3
    assert webhook_signing_secrets(db, customer_id, KEY) == [third]
