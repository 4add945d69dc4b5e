"""notify tells the customer and product analytics how each job ended: a webhook signed
with the customer's own secret and a PostHog event per end state, once, also when the
same announcement is redelivered (its retries keep one delivery id)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.codec import Codec
from sinks.customers import new_webhook_secret
from sinks.db import Pool, transaction
from sinks.jobs import create_job
from sinks.webhooks import ID_HEADER
from streams.notify import build
from streams.runtime.stage import Stage
from tests.fixtures.kafka import TopicFactory, produce_to
from tests.fixtures.workers import start_stage
from tests.gateway.test_analytics import CaptureEndpoint
from tests.gateway.test_webhooks import Receiver, verify
from vidinsight.settings import Settings

# The key this test's notify worker derives customers' webhook secrets from.
SECRETS_KEY = "notify-test-webhook-secrets-key"


def from_env() -> Stage:
    """notify on the test's private topics (``NOTIFY_*``)."""
    return build(
        {"input": os.environ["NOTIFY_INPUT"], "dlq": os.environ["NOTIFY_DLQ"]},
        group_id=os.environ["NOTIFY_GROUP"],
    )


@pytest.fixture
def endpoints() -> Iterator[tuple[Receiver, CaptureEndpoint]]:
    receiver, capture = Receiver(failures=1), CaptureEndpoint()
    yield receiver, capture
    receiver.close()
    capture.close()


def announce(
    settings: Settings, codec: Codec, topic: str, job_id: str, status: str, customer_id: str
) -> None:
    """A JobCompleted for the job, as synthesise or the runtime announces it."""
    value = {
        "job_id": job_id,
        "customer_id": customer_id,
        "status": status,
        "reason": "corrupt_media" if status == "failed" else None,
        "insights_uri": None,
        "completed_at_ms": int(time.time() * 1000),
    }
    produce_to(settings.kafka_bootstrap, topic, codec.encode(topic, "JobCompleted", value), job_id)


def test_each_end_state_is_sent_once_as_a_signed_webhook_and_an_analytics_event(
    settings: Settings,
    codec: Codec,
    db_pool: Pool,
    topic_factory: TopicFactory,
    endpoints: tuple[Receiver, CaptureEndpoint],
    tmp_path: Path,
) -> None:
    receiver, capture = endpoints
    job_id, customer_id = f"job-{uuid.uuid4()}", f"cust-notify-{uuid.uuid4().hex[:8]}"
    with transaction(db_pool) as conn:
        create_job(
            conn,
            job_id=job_id,
            customer_id=customer_id,
            source_uri="file:///tmp/in.mp4",
            webhook_url=f"http://127.0.0.1:{receiver.port}/hooks",
        )
        secret, _ = new_webhook_secret(conn, customer_id, SECRETS_KEY)
    topic = topic_factory("notify-in", value_schema="JobCompleted")
    env = {
        **os.environ,
        "NOTIFY_INPUT": topic,
        "NOTIFY_DLQ": topic_factory("notify-dlq", value_schema="DeadLetter"),
        "NOTIFY_GROUP": f"test.notify.{uuid.uuid4().hex[:8]}",
        "VI_WEBHOOK_SECRETS_KEY": SECRETS_KEY,
        "VI_WEBHOOK_BACKOFF_INITIAL_SECONDS": "0.05",
        "VI_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
        "VI_POSTHOG_API_KEY": "phc_test_project",
        "VI_POSTHOG_HOST": capture.url,
    }
    worker = start_stage("notify", "tests.streams.test_notify:from_env", env, tmp_path / "n.log")
    try:
        announce(settings, codec, topic, job_id, "failed", customer_id)
        announce(settings, codec, topic, job_id, "failed", customer_id)  # redelivered
        announce(settings, codec, topic, job_id, "completed", customer_id)  # after a replay
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            len(capture.events()) < 2 or sum(1 for h, _ in receiver.calls if h) < 3
        ):
            time.sleep(0.2)
        time.sleep(1.5)  # anything sent twice would arrive by now
    finally:
        worker.terminate()

    bodies = [json.loads(body) for _, body in receiver.calls]
    # The first call got a 500 and was retried (same delivery id); every call is signed
    # with the customer's secret.
    assert all(verify(headers, body, secret) for headers, body in receiver.calls)
    assert [b["type"] for b in bodies] == ["job.failed", "job.failed", "job.completed"]
    failed, retried, completed = (headers[ID_HEADER] for headers, _ in receiver.calls)
    assert failed == retried != completed
    assert {b["job_id"] for b in bodies} == {job_id}
    events = [(e["event"], e["properties"]["status"]) for e in capture.events()]
    assert events == [("job failed", "failed"), ("job completed", "completed")]
