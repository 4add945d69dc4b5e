"""API keys: found by their hash, refused once revoked, never stored in clear."""

from __future__ import annotations

import uuid

from sinks import customers
from sinks.db import Connection


def test_a_key_identifies_its_customer_until_revoked(db: Connection) -> None:
    customer_id, api_key = customers.create_customer(db, "Acme")
    spare = customers.issue_key(db, customer_id)
    assert api_key.startswith("vi_") and api_key != spare
    assert customers.customer_for_key(db, api_key) == customer_id
    assert customers.revoke_key(db, api_key)
    assert not customers.revoke_key(db, api_key)
    assert customers.customer_for_key(db, api_key) is None
    assert customers.customer_for_key(db, spare) == customer_id
    assert customers.customer_for_key(db, "vi_" + uuid.uuid4().hex) is None


def test_only_the_hash_of_a_key_is_stored(db: Connection) -> None:
    customer_id, api_key = customers.create_customer(db, "Acme")
    stored = db.execute(
        "SELECT key_sha256 FROM api_keys WHERE customer_id = %s", (customer_id,)
    ).fetchall()
    assert [bytes(r["key_sha256"]) for r in stored] == [customers.hash_key(api_key)]
    dump = db.execute(
        "SELECT count(*) AS n FROM api_keys a WHERE a::text LIKE %s", (f"%{api_key[3:]}%",)
    ).fetchone()
    assert dump == {"n": 0}


def test_a_budget_is_set_and_cleared_in_micro_dollars(db: Connection) -> None:
    customer_id, _ = customers.create_customer(db, "Acme", firebase_uid=f"fb_{uuid.uuid4().hex}")
    assert customers.set_budget(db, customer_id, 250_000_000)
    customer = customers.get_customer(db, customer_id)
    assert customer is not None and customer["monthly_budget_usd_micros"] == 250_000_000
    assert customers.customer_for_firebase_uid(db, customer["firebase_uid"]) == customer_id
    assert customers.set_budget(db, customer_id, None)
    assert not customers.set_budget(db, "cus_" + uuid.uuid4().hex, 1)
