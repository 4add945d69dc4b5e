"""A gateway killed between committing a job and producing it loses nothing (I1).

The real ``vidinsight gateway`` runs as a subprocess with the ``gateway_after_insert``
failpoint armed: it SIGKILLs itself right after the job row is committed, before the
request reaches Kafka. A restarted gateway's outbox relay then publishes the row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from schemas.codec import Codec
from sinks.db import Pool, transaction
from sinks.jobs import get_job
from tests.fixtures.kafka import consume_from
from tests.fixtures.network import free_port
from tests.gateway.conftest import Customer, make_jobs_topic
from vidinsight.settings import REPO_ROOT, Settings


def start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """The real ``vidinsight gateway``, its JSON log lines appended to ``log``."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "gateway", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("gateway did not start within 60 s")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_job_committed_before_a_crash_is_published_by_the_relay(
    settings: Settings,
    customer: Customer,
    db_pool: Pool,
    codec: Codec,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.log"
    topic = make_jobs_topic(settings)
    port = free_port()
    env = {"VI_GATEWAY_JOBS_TOPIC": topic, "VI_GATEWAY_RELAY_INTERVAL_SECONDS": "0"}
    doomed = start({**env, "VI_FAILPOINTS": "gateway_after_insert"}, port, log)
    processes.append(doomed)
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{port}/v1/jobs",
            json={"source_url": "https://example.com/crash.mp4"},
            headers=customer.headers,
            timeout=30,
        )
    assert doomed.wait(10) == -9  # SIGKILL, as an OOM kill would
    with transaction(db_pool) as conn:
        rows = conn.execute(
            "SELECT job_id, published_at FROM jobs WHERE customer_id = %s",
            (customer.customer_id,),
        ).fetchall()
    assert len(rows) == 1 and rows[0]["published_at"] is None
    job_id = rows[0]["job_id"]
    assert consume_from(settings.kafka_bootstrap, topic, 1, timeout=2) == []

    relay_env = {
        **env,
        "VI_GATEWAY_RELAY_INTERVAL_SECONDS": "0.2",
        "VI_GATEWAY_RELAY_MIN_AGE_SECONDS": "0",
    }
    processes.append(start(relay_env, port, log))
    deadline = time.monotonic() + 30
    published_at = None
    while published_at is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with transaction(db_pool) as conn:
            job = get_job(conn, job_id)
        assert job is not None
        published_at = job["published_at"]
    assert published_at is not None, "the relay did not publish the job within 30 s"
    ours = [
        m
        for m in consume_from(settings.kafka_bootstrap, topic, 100, timeout=5)
        if m.key() == job_id.encode()
    ]
    assert len(ours) == 1
    record = codec.decode(topic, ours[0].value())
    assert record["customer_id"] == customer.customer_id
    assert record["source_uri"] == "https://example.com/crash.mp4"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=customer.headers) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert any(r.get("job_id") == job_id and "relay" in r["msg"] for r in records)
    assert customer.api_key not in log.read_text()  # no secret in the logs
