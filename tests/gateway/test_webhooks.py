"""Webhooks: signed over delivery id, timestamp and body (Standard Webhooks), checked by
the documented verifier, retried with backoff under one delivery id, every attempt
recorded, never sent to an address the SSRF guard refuses, and bounded in time as a whole
exchange (a receiver that drips its headers or never ends its answer cannot hold
notifications)."""

from __future__ import annotations

import base64
import json
import re
import runpy
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import pytest

from media.fetch import parse_networks
from sinks.db import Pool, transaction
from sinks.deliveries import job_deliveries
from sinks.webhooks import ID_HEADER, WebhookPolicy, deliver, delivery_id, job_event
from tests.fixtures.network import Receiver, StallingHttpServer
from vidinsight.settings import REPO_ROOT

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
# The receiver's verifier exactly as docs/integration.md shows it.
VERIFIER = REPO_ROOT / "examples" / "verify_webhook.py"
Verifier = Callable[..., bool]
verify_webhook = cast(Verifier, runpy.run_path(str(VERIFIER))["verify"])
# A stalling receiver is given this long...
DEADLINE_SECONDS = 3.0
# ...and must be given up no later than this after it, even on a loaded two-core machine.
SLACK_SECONDS = 3.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver(failures=2)
    yield endpoint
    endpoint.close()


def policy(
    allowed: str = "", timeout_seconds: float = 5, backoff_initial_seconds: float = 0.05
) -> WebhookPolicy:
    return WebhookPolicy(
        max_attempts=4,
        backoff_initial_seconds=backoff_initial_seconds,
        backoff_max_seconds=backoff_initial_seconds * 20,
        timeout_seconds=timeout_seconds,
        allowed_networks=parse_networks(allowed),
    )


def verify(headers: Mapping[str, str], body: bytes, secret: str = SECRET, **now: Any) -> bool:
    """What a receiver does (the documented verifier), with this module's secret."""
    return verify_webhook(secret, headers, body, **now)


def send(
    db_pool: Pool,
    job_id: str,
    url: str,
    event: Mapping[str, Any],
    rules: WebhookPolicy,
    signing: Sequence[str] = (SECRET,),
    **options: Any,
) -> bool:
    """``deliver`` signed with this module's secret unless told otherwise."""
    return deliver(db_pool, job_id, url, event, rules, signing, **options)


def test_the_integration_guide_shows_the_verifier_the_tests_run() -> None:
    guide = (REPO_ROOT / "docs" / "integration.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
    assert VERIFIER.read_text() in blocks


def test_webhook_is_signed_retried_with_backoff_and_recorded(
    receiver: Receiver, db_pool: Pool
) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    url = f"http://127.0.0.1:{receiver.port}/hooks/vidinsight"
    event = job_event({"job_id": job_id, "status": "failed", "error_reason": "corrupt_media"})
    pauses: list[float] = []
    assert send(db_pool, job_id, url, event, policy("127.0.0.0/8"), sleep=pauses.append)
    assert pauses == [0.05, 0.1]  # exponential backoff between the three attempts
    assert len(receiver.calls) == 3
    # Every attempt is signed, under the one id a receiver deduplicates on.
    assert {headers[ID_HEADER] for headers, _ in receiver.calls} == {delivery_id(event)}
    assert all(verify(headers, body) for headers, body in receiver.calls)
    headers, body = receiver.calls[-1]
    assert not verify(headers, body.replace(b"failed", b"completed"))  # tampering shows
    assert not verify({**headers, ID_HEADER: "msg_other"}, body)  # so does another id
    assert not verify(headers, body, now=time.time() + 301)  # and a replay after 5 minutes
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert json.loads(body) == {
        "type": "job.failed",
        "job_id": job_id,
        "status": "failed",
        "error": {"reason": "corrupt_media", "message": "", "stage": None},
    }
    with transaction(db_pool) as conn:
        attempts = job_deliveries(conn, job_id)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 500), (3, 204)]


@pytest.mark.parametrize(
    "host",
    ["localhost", "127.0.0.1", "10.0.0.7", "192.168.1.1", "169.254.169.254", "[::1]"],
)
def test_inward_addresses_are_refused_after_resolution(
    receiver: Receiver, db_pool: Pool, host: str
) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    url = f"http://{host}:{receiver.port}/steal"
    event = job_event({"job_id": job_id, "status": "completed"})
    assert not send(db_pool, job_id, url, event, policy(), sleep=lambda _s: None)
    assert receiver.calls == []
    with transaction(db_pool) as conn:
        attempts = job_deliveries(conn, job_id)
    assert len(attempts) == 1  # refused once, never retried
    assert attempts[0]["status_code"] is None
    assert attempts[0]["error"].startswith("source_forbidden")


@pytest.fixture(params=["drip-headers", "endless-body"])
def stalling(request: pytest.FixtureRequest) -> Iterator[StallingHttpServer]:
    """A receiver whose answer never ends: headers one byte every 0.5 s, or a body for ever."""
    interval = 0.5 if request.param == "drip-headers" else 0.05
    server = StallingHttpServer(request.param, interval_seconds=interval)
    yield server
    server.close()


def attempts_of(db_pool: Pool, job_id: str) -> list[tuple[int, int | None, str]]:
    with transaction(db_pool) as conn:
        rows = job_deliveries(conn, job_id)
    return [(row["attempt"], row["status_code"], row["error"] or "") for row in rows]


def test_a_stalling_receiver_fails_at_the_deadline_and_the_next_webhook_goes_out(
    stalling: StallingHttpServer, db_pool: Pool
) -> None:
    """The policy would wait a minute per attempt; the deadline ends the whole delivery,
    which is recorded as failed, not raised, and the next notification is sent as usual."""
    slow_job, next_job = f"job_{uuid.uuid4().hex}", f"job_{uuid.uuid4().hex}"
    rules = policy("127.0.0.0/8", timeout_seconds=60)
    deadline = time.monotonic() + DEADLINE_SECONDS
    delivered = send(
        db_pool,
        slow_job,
        stalling.url("/hooks"),
        job_event({"job_id": slow_job, "status": "completed"}),
        rules,
        deadline=deadline,
    )
    ended = time.monotonic()
    assert not delivered
    assert deadline <= ended <= deadline + SLACK_SECONDS
    [(attempt, status, error)] = attempts_of(db_pool, slow_job)
    assert (attempt, status) == (1, None)
    assert error.startswith("stage_timeout: ")
    assert stalling.wait_hung_up(1, timeout=10), "the stalled connection was left open"

    normal = Receiver(failures=0)
    try:
        url = f"http://127.0.0.1:{normal.port}/hooks"
        event = job_event({"job_id": next_job, "status": "completed"})
        assert send(db_pool, next_job, url, event, rules, deadline=time.monotonic() + 30)
    finally:
        normal.close()
    assert len(normal.calls) == 1
    assert attempts_of(db_pool, next_job) == [(1, 204, "")]


def test_the_attempt_timeout_bounds_each_whole_exchange(
    stalling: StallingHttpServer, db_pool: Pool
) -> None:
    """Without a near deadline, each attempt still ends after the policy's timeout (connect,
    headers and body together) and is retried, with its own reason."""
    job_id = f"job_{uuid.uuid4().hex}"
    timeout = 1.0
    pauses: list[float] = []
    began = time.monotonic()
    delivered = send(
        db_pool,
        job_id,
        stalling.url("/hooks"),
        job_event({"job_id": job_id, "status": "completed"}),
        policy("127.0.0.0/8", timeout_seconds=timeout),
        sleep=pauses.append,
        deadline=began + 600,
    )
    elapsed = time.monotonic() - began
    assert not delivered
    assert 4 * timeout <= elapsed <= 4 * timeout + SLACK_SECONDS
    attempts = attempts_of(db_pool, job_id)
    assert [(a, s) for a, s, _ in attempts] == [(1, None), (2, None), (3, None), (4, None)]
    assert all(error.startswith("timeout: ") for _, _, error in attempts)
    assert pauses == [0.05, 0.1, 0.2]
    assert stalling.connections == 4


def test_no_backoff_starts_that_would_end_past_the_deadline(db_pool: Pool) -> None:
    """A failed attempt whose backoff would outlast the deadline is the last one: the
    delivery ends at once, recorded as timed out, without sleeping into the deadline."""
    failing = Receiver(failures=100)
    job_id = f"job_{uuid.uuid4().hex}"
    pauses: list[float] = []
    try:
        delivered = send(
            db_pool,
            job_id,
            f"http://127.0.0.1:{failing.port}/hooks",
            job_event({"job_id": job_id, "status": "completed"}),
            policy("127.0.0.0/8", backoff_initial_seconds=120),
            sleep=pauses.append,
            deadline=time.monotonic() + 60,
        )
    finally:
        failing.close()
    assert not delivered
    assert pauses == []
    assert len(failing.calls) == 1
    [first, second] = attempts_of(db_pool, job_id)
    assert first == (1, 500, "answered HTTP 500")
    assert second[:2] == (2, None) and second[2].startswith("stage_timeout: not sent")


def test_a_passed_deadline_sends_nothing_and_says_so(receiver: Receiver, db_pool: Pool) -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    event = job_event({"job_id": job_id, "status": "completed"})
    passed = time.monotonic()
    assert not send(db_pool, job_id, url, event, policy("127.0.0.0/8"), deadline=passed)
    assert receiver.calls == []
    assert attempts_of(db_pool, job_id) == [
        (1, None, "stage_timeout: not sent: the deadline has passed")
    ]


def test_without_a_signing_secret_nothing_is_sent(receiver: Receiver, db_pool: Pool) -> None:
    """An unsigned webhook could be forged by anyone, so none is sent."""
    job_id = f"job_{uuid.uuid4().hex}"
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    event = job_event({"job_id": job_id, "status": "completed"})
    assert not send(db_pool, job_id, url, event, policy("127.0.0.0/8"), signing=())
    assert receiver.calls == []
