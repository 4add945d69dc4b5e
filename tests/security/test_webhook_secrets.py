"""Webhook secrets per customer, attacked through a real notify worker and real receivers.

Customers are made and their secrets rotated with the operator's CLI; each customer's
receiver runs the verifier docs/integration.md shows (examples/verify_webhook.py) and
answers 401 to what it cannot verify. What a hostile customer gets: nothing it can sign
verifies at another customer's receiver, a rotated-out secret stops working when its
overlap ends, a captured delivery cannot be replayed later or re-dated, and no secret
(nor the key they derive from) is ever written to a log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.codec import Codec
from sinks.db import Pool, transaction
from sinks.deliveries import job_deliveries
from sinks.jobs import create_job
from sinks.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.workers import WorkerProcess, start_stage
from tests.gateway.test_webhooks import verify_webhook
from tests.streams.test_notify import announce
from vidinsight.settings import REPO_ROOT, Settings

KEY = "security-test-webhook-secrets-key"
DELIVERY_TIMEOUT_SECONDS = 60.0
# A rotation's first overlap: long enough for a delivery on a quiet machine, short enough
# to wait out. A delivery signed after it ended (a busy machine) is not a failure: the
# rotation is repeated with twice the overlap, up to one that outlasts the longest wait.
FIRST_OVERLAP_SECONDS = 15.0
MAX_OVERLAP_SECONDS = 4 * DELIVERY_TIMEOUT_SECONDS


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    accepted: bool


class VerifyingReceiver:
    """A customer's endpoint: 204 for a delivery one of its secrets verifies, else 401."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.calls: list[Call] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                accepted = any(verify_webhook(s, headers, body) for s in receiver.secrets)
                receiver.calls.append(Call(headers, body, accepted))
                self.send_response(204 if accepted else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def call_for(self, job_id: str, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> Call:
        """The first delivery about ``job_id`` (polled for, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            for call in list(self.calls):
                if json.loads(call.body)["job_id"] == job_id:
                    return call
            assert time.monotonic() < deadline, f"no webhook for {job_id} in {timeout} s"
            time.sleep(0.1)

    def post(self, headers: dict[str, str], body: bytes) -> int:
        """What an attacker does: send a delivery of its own making (its webhook headers)."""
        signed = {name: value for name, value in headers.items() if name.startswith("webhook-")}
        return httpx.post(self.url, content=body, headers=signed, timeout=10).status_code

    def close(self) -> None:
        self._server.shutdown()


def customers_cli(*args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    """``vidinsight customers ARGS`` as an operator runs it, with the platform's key."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "customers", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "VI_WEBHOOK_SECRETS_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class Customer:
    customer_id: str
    secret: str
    receiver: VerifyingReceiver


@dataclass
class Notify:
    """A notify worker on private topics, the operator's CLI, and every customer made."""

    settings: Settings
    codec: Codec
    pool: Pool
    topic: str
    worker: WorkerProcess
    cli_errors: list[str] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)

    def cli(self, *args: str) -> dict[str, Any]:
        """``vidinsight customers ARGS`` as an operator runs it; its JSON output."""
        done = customers_cli(*args)
        self.cli_errors.append(done.stderr)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def customer(self, name: str) -> Customer:
        """A new customer whose receiver holds the secret ``customers create`` printed."""
        created = self.cli("create", f"{name}-{uuid.uuid4().hex[:6]}")
        secret = created["webhook_secret"]
        customer = Customer(created["customer_id"], secret, VerifyingReceiver([secret]))
        self.customers.append(customer)
        return customer

    def job_ends(self, customer: Customer, status: str = "completed") -> str:
        """A job of the customer's, with a webhook to its receiver, announced as ended."""
        job_id = f"job_{uuid.uuid4().hex}"
        with transaction(self.pool) as conn:
            create_job(
                conn,
                job_id=job_id,
                customer_id=customer.customer_id,
                source_uri="https://media.example/talk.mp4",
                webhook_url=customer.receiver.url,
            )
        announce(self.settings, self.codec, self.topic, job_id, status, customer.customer_id)
        return job_id


@pytest.fixture
def notify(
    settings: Settings,
    codec: Codec,
    db_pool: Pool,
    topic_factory: TopicFactory,
    tmp_path: Path,
) -> Iterator[Notify]:
    topic = topic_factory("notify-in", value_schema="JobCompleted")
    env = {
        **os.environ,
        "NOTIFY_INPUT": topic,
        "NOTIFY_DLQ": topic_factory("notify-dlq", value_schema="DeadLetter"),
        "NOTIFY_GROUP": f"test.notify.{uuid.uuid4().hex[:8]}",
        "VI_WEBHOOK_SECRETS_KEY": KEY,
        "VI_WEBHOOK_MAX_ATTEMPTS": "2",
        "VI_WEBHOOK_BACKOFF_INITIAL_SECONDS": "0.05",
        "VI_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
        "VI_LOG_LEVEL": "DEBUG",  # the most a worker ever writes
    }
    worker = start_stage(
        "notify", "tests.streams.test_notify:from_env", env, tmp_path / "notify.log"
    )
    running = Notify(settings, codec, db_pool, topic, worker)
    try:
        yield running
    finally:
        worker.terminate()
        for customer in running.customers:
            customer.receiver.close()


def test_a_customer_can_neither_verify_nor_forge_another_customers_events(
    notify: Notify, db_pool: Pool
) -> None:
    alice, bob = notify.customer("alice"), notify.customer("bob")
    assert alice.secret != bob.secret
    alice_job, bob_job = notify.job_ends(alice), notify.job_ends(bob, "failed")
    to_alice, to_bob = alice.receiver.call_for(alice_job), bob.receiver.call_for(bob_job)

    # Each receiver accepts its own customer's delivery, signed once, with that secret.
    assert to_alice.accepted and to_bob.accepted
    assert len(to_bob.headers[SIGNATURE_HEADER].split()) == 1
    with transaction(db_pool) as conn:
        assert [a["status_code"] for a in job_deliveries(conn, bob_job)] == [204]
    # Alice's secret verifies nothing sent to Bob, and Bob's nothing sent to Alice.
    assert not verify_webhook(alice.secret, to_bob.headers, to_bob.body)
    assert not verify_webhook(bob.secret, to_alice.headers, to_alice.body)

    # Alice forges "Bob's job completed" with the secret she holds: Bob's receiver says 401.
    forged = json.dumps({**json.loads(to_bob.body), "type": "job.completed"}).encode()
    now = int(time.time())
    headers = {
        ID_HEADER: to_bob.headers[ID_HEADER],
        TIMESTAMP_HEADER: str(now),
        SIGNATURE_HEADER: signature([alice.secret], to_bob.headers[ID_HEADER], now, forged),
    }
    assert bob.receiver.post(headers, forged) == 401
    # Nor does her own genuine, fresh delivery pass at Bob's.
    assert bob.receiver.post(to_alice.headers, to_alice.body) == 401


def test_during_a_rotations_overlap_both_secrets_verify_and_after_it_only_the_new_one(
    notify: Notify, db_pool: Pool
) -> None:
    bob = notify.customer("bob")
    old, overlap = bob.secret, FIRST_OVERLAP_SECONDS
    while True:
        rotated = notify.cli(
            "rotate-webhook-secret", bob.customer_id, "--overlap-hours", str(overlap / 3600)
        )
        new = rotated["webhook_secret"]
        assert new != old and rotated["customer_id"] == bob.customer_id
        retires_at = datetime.fromisoformat(rotated["previous_secrets_sign_until"])
        during = bob.receiver.call_for(notify.job_ends(bob))
        if len(during.headers[SIGNATURE_HEADER].split()) == 2:
            break
        # One signature is right only for a delivery signed once the overlap was over.
        assert int(during.headers[TIMESTAMP_HEADER]) >= retires_at.timestamp() - 1
        old, overlap = new, overlap * 2  # the last new secret is the one now retiring
        bob.receiver.secrets = [old]
        assert overlap <= MAX_OVERLAP_SECONDS, "no delivery inside any overlap"

    # Inside the overlap: signed with both, so Bob's receiver, still on the old secret,
    # accepts, and so would one already switched to the new secret.
    assert during.accepted
    assert verify_webhook(new, during.headers, during.body)
    assert verify_webhook(old, during.headers, during.body)

    bob.receiver.secrets = [new]  # Bob switches
    _wait_until_database_time_passes(db_pool, retires_at)

    after = bob.receiver.call_for(notify.job_ends(bob))
    assert len(after.headers[SIGNATURE_HEADER].split()) == 1
    assert after.accepted
    assert not verify_webhook(old, after.headers, after.body)  # the old one is done


def test_a_captured_delivery_cannot_be_replayed_later_or_redated(notify: Notify) -> None:
    bob = notify.customer("bob")
    genuine = bob.receiver.call_for(notify.job_ends(bob))
    assert genuine.accepted
    sent_at = int(genuine.headers[TIMESTAMP_HEADER])
    assert abs(sent_at - time.time()) < DELIVERY_TIMEOUT_SECONDS

    # Replayed as is, after the verifier's 5 minutes: refused (within them, the receiver
    # deduplicates on webhook-id, which is the same).
    assert verify_webhook(bob.secret, genuine.headers, genuine.body, now=sent_at + 299)
    assert not verify_webhook(bob.secret, genuine.headers, genuine.body, now=sent_at + 301)
    # Re-dated, under another id, or with another body: the signature no longer matches.
    redated = {**genuine.headers, TIMESTAMP_HEADER: str(int(time.time()) + 1)}
    assert bob.receiver.post(redated, genuine.body) == 401
    renamed = {**genuine.headers, ID_HEADER: f"msg_{uuid.uuid4().hex}"}
    assert bob.receiver.post(renamed, genuine.body) == 401
    altered = genuine.body.replace(b"completed", b"failed")
    assert bob.receiver.post(genuine.headers, altered) == 401


def test_no_webhook_secret_nor_the_key_reaches_a_log_line(notify: Notify) -> None:
    """Issued, rotated, signed with, refused (401, retried): the worker's debug log and the
    CLI's stderr never hold a secret, the key or a secret's HMAC key in base64."""
    alice = notify.customer("alice")
    rotated = notify.cli("rotate-webhook-secret", alice.customer_id, "--overlap-hours", "1")
    alice.receiver.secrets = ["whsec_" + "A" * 43 + "="]  # a receiver set up wrong: 401s
    job_id = notify.job_ends(alice)
    alice.receiver.call_for(job_id)
    notify.worker.wait_for_log("webhook attempt failed")

    log = notify.worker.log_path.read_text() + "".join(notify.cli_errors)
    for secret in (alice.secret, rotated["webhook_secret"]):
        assert secret.removeprefix("whsec_") not in log
    assert KEY not in log
    assert job_id in log  # the lines about this delivery are there


def test_a_rotation_names_an_existing_customer_and_needs_the_key() -> None:
    """A typo creates no secret for nobody; without the key nothing is issued."""
    unknown = customers_cli("rotate-webhook-secret", f"cus_{uuid.uuid4().hex}")
    assert unknown.returncode == 1 and "no customer" in unknown.stderr
    created = json.loads(customers_cli("create", "keyless", key="").stdout)
    assert created["webhook_secret"] is None and created["api_key"].startswith("vi_")
    keyless = customers_cli("rotate-webhook-secret", created["customer_id"], key="")
    assert keyless.returncode == 2 and "VI_WEBHOOK_SECRETS_KEY is not set" in keyless.stderr
    negative = customers_cli("rotate-webhook-secret", created["customer_id"], "--overlap-hours=-1")
    assert negative.returncode == 2 and keyless.stdout == negative.stdout == ""


def _wait_until_database_time_passes(db_pool: Pool, instant: datetime) -> None:
    """Poll PostgreSQL's clock (the one the overlap is judged by) until ``instant``."""
    deadline = time.monotonic() + MAX_OVERLAP_SECONDS + 30
    while True:
        with db_pool.connection() as conn:
            row = conn.execute("SELECT now() > %s AS passed", (instant,)).fetchone()
        if row is not None and row["passed"]:
            return
        assert time.monotonic() < deadline, f"PostgreSQL's clock never passed {instant}"
        time.sleep(0.5)
