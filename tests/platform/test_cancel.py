"""A job cancelled while it is being transcribed stops before its next paid or long step:
nothing is analysed or charged for analysis, ``JobCompleted(cancelled)`` is announced
exactly once, the API says ``cancelled``, and the job holds its place in the customer's
in-flight quota until the work already running has stopped."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Message

from schemas.codec import Codec
from sinks.db import transaction
from sinks.jobs import count_in_flight
from tests.faults.bad_inputs import read_to_end
from tests.fixtures.media import LongMedia
from tests.fixtures.platform import Platform
from topics.catalogue import JOBS_COMPLETED_TOPIC
from vidinsight.errors import PermanentError

SETTLE_TIMEOUT_SECONDS = 180.0


def test_a_job_cancelled_while_transcribed_stops_and_is_announced_once(
    platform: Platform, long_media: LongMedia, codec: Codec
) -> None:
    customer_id, api_key = platform.new_customer(f"cancel-{uuid.uuid4().hex[:6]}")
    job_id = platform.submit(long_media.video, api_key=api_key)
    _wait_transcribing(platform, job_id)

    with platform.client(api_key) as client:
        answer = client.delete(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"

    # Until every run of the job has settled, the quota counts the job exactly while some
    # of its work still runs; afterwards it is free.
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while True:
        counted, running, unsettled = _quota_snapshot(platform, customer_id, job_id)
        assert counted == (1 if running else 0), (counted, running)
        if not unsettled:
            break
        assert time.monotonic() < deadline, f"{unsettled} run(s) of {job_id} never settled"
        time.sleep(0.05)

    with platform.client(api_key) as client:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    assert job["status"] == "cancelled"
    stages = _run_statuses(platform, job_id)
    assert stages.get("analyse", "cancelled") == "cancelled", stages
    assert "synthesise" not in stages
    assert "cancelled" in stages.values()
    with transaction(platform.pool) as conn:
        analysed = conn.execute(
            "SELECT count(*) AS n FROM cost_ledger WHERE job_id = %s AND stage = 'analyse'",
            (job_id,),
        ).fetchone()
    assert analysed is not None and analysed["n"] == 0
    announcements = _announcements(platform, codec, job_id)
    assert [(a["status"], a["reason"]) for a in announcements] == [("cancelled", "job_cancelled")]


def _announcements(platform: Platform, codec: Codec, job_id: str) -> list[dict[str, Any]]:
    """The job's JobCompleted messages, once the first has landed (it is produced just
    after the run that claimed it was stored)."""
    deadline = time.monotonic() + 30
    while True:
        found = [
            value
            for message in read_to_end(platform.settings.kafka_bootstrap, [JOBS_COMPLETED_TOPIC])
            if (value := _decoded(codec, message)) and value["job_id"] == job_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _decoded(codec: Codec, message: Message) -> dict[str, Any] | None:
    """A JobCompleted, or None for what is not one: the topic is open to any producer,
    and the platform dead-letters garbage there rather than stop (invariant I3)."""
    try:
        return dict(codec.decode(JOBS_COMPLETED_TOPIC, message.value() or b""))
    except PermanentError:
        return None


def _wait_transcribing(platform: Platform, job_id: str, timeout: float = 180) -> None:
    """Until transcription has started and most of the chunks are still to come."""
    deadline = time.monotonic() + timeout
    while True:
        with transaction(platform.pool) as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM stage_runs WHERE stage = 'transcribe' AND job_id = %s",
                (job_id,),
            ).fetchone()
        if row is not None and row["n"] > 0:
            return
        assert time.monotonic() < deadline, f"{job_id} not transcribed within {timeout} s"
        time.sleep(0.05)


def _quota_snapshot(platform: Platform, customer_id: str, job_id: str) -> tuple[int, int, int]:
    """In one transaction: the quota's count, the job's running runs, and whether messages
    of the job may still arrive (a chunk not yet settled, or a stage not yet reached)."""
    with transaction(platform.pool) as conn:
        counted = count_in_flight(conn, customer_id)
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'running') AS running,"
            " count(*) FILTER (WHERE stage = 'transcribe') AS chunks"
            " FROM stage_runs WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    chunks_left = int(row["chunks"]) < _chunk_count(platform, job_id)
    return counted, int(row["running"]), int(row["running"]) + int(chunks_left)


def _chunk_count(platform: Platform, job_id: str) -> int:
    with transaction(platform.pool) as conn:
        row = conn.execute(
            "SELECT outputs FROM stage_runs WHERE stage = 'preprocess' AND job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return sum(1 for output in row["outputs"] if output["topic"] == "vi.audio.chunks")


def _run_statuses(platform: Platform, job_id: str) -> dict[str, str]:
    """Each stage's runs of the job, reduced to one status ("cancelled" if any was)."""
    with transaction(platform.pool) as conn:
        rows = conn.execute(
            "SELECT stage, status FROM stage_runs WHERE job_id = %s", (job_id,)
        ).fetchall()
    statuses: dict[str, str] = {}
    for row in rows:
        if statuses.get(row["stage"]) != "cancelled":
            statuses[row["stage"]] = row["status"]
    return statuses
