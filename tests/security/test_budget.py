"""The monthly budget is hard: asked before every call a provider bills, whichever way
the job arrived. Jobs here are produced straight to Kafka (no gateway and its 402), and
speech-to-text is the managed transcriber (litellm) against an OpenAI-shaped endpoint on
localhost, so the real client would send real requests if the budget let it."""

from __future__ import annotations

import json
import time
import uuid

from sinks.customers import create_customer
from sinks.db import Pool, transaction
from sinks.stage_runs import runs_for_job
from tests.fixtures.costs import spend
from tests.fixtures.media import GeneratedMedia, MediaPipeline
from tests.inference.test_transcriber_litellm import KEY_ENV, OpenAIShapedServer, endpoint

__all__ = ["endpoint"]  # the managed provider's stand-in, a fixture of the litellm tests

BUDGET_USD_MICROS = 1_000_000
STT_MODEL = "openai/whisper-1"


def _customer(pool: Pool, name: str) -> str:
    with transaction(pool) as conn:
        customer_id, _ = create_customer(
            conn, f"{name}-{uuid.uuid4().hex[:6]}", monthly_budget_usd_micros=BUDGET_USD_MICROS
        )
    return customer_id


def _spend_the_budget(pool: Pool, customer_id: str) -> None:
    with transaction(pool) as conn:
        spend(conn, customer_id, BUDGET_USD_MICROS)


def _wait_preprocessed(pool: Pool, job_id: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with transaction(pool) as conn:
            if any(
                run["stage"] == "preprocess" and run["status"] == "succeeded"
                for run in runs_for_job(conn, job_id)
            ):
                return
        time.sleep(0.2)
    raise AssertionError(f"{job_id} was not preprocessed within {timeout} s")


def test_a_job_sent_to_kafka_by_a_customer_over_budget_fails_at_ingest(
    media_pipeline: MediaPipeline, generated_media: GeneratedMedia
) -> None:
    spent = _customer(media_pipeline.pool, "spent")
    _spend_the_budget(media_pipeline.pool, spent)
    media_pipeline.start("ingest")
    job_id = f"job-{uuid.uuid4().hex[:8]}-over"
    upload = media_pipeline.upload(generated_media.file("short.mp4"), job_id, spent)
    media_pipeline.submit(job_id, upload, customer_id=spent)
    job = media_pipeline.wait_job(job_id, ("failed",))
    assert (job["error_stage"], job["error_reason"]) == ("ingest", "budget_exceeded")
    assert media_pipeline.read("ingested", 1, timeout=5) == []


def test_managed_transcription_is_never_called_once_the_budget_is_spent(
    media_pipeline: MediaPipeline,
    generated_media: GeneratedMedia,
    endpoint: OpenAIShapedServer,
) -> None:
    pool = media_pipeline.pool
    crossing, within = _customer(pool, "crossing"), _customer(pool, "within")
    run = uuid.uuid4().hex[:8]
    for stage in ("ingest", "preprocess", "scenes"):
        media_pipeline.start(stage)
    jobs = {}
    for customer_id in (crossing, within):
        job_id = f"job-{run}-{customer_id}"
        upload = media_pipeline.upload(generated_media.file("short.mp4"), job_id, customer_id)
        media_pipeline.submit(job_id, upload, customer_id=customer_id)
        jobs[customer_id] = job_id
    for job_id in jobs.values():
        _wait_preprocessed(pool, job_id)
    _spend_the_budget(pool, crossing)  # after admission, before any speech-to-text
    api_base = f"http://127.0.0.1:{endpoint.server_port}/v1"
    media_pipeline.start(
        "transcribe",
        VI_TRANSCRIBER="litellm",
        VI_STT_MODEL=STT_MODEL,
        VI_LLM_API_BASES=json.dumps({STT_MODEL: api_base}),
        VI_LLM_API_KEY_ENVS=json.dumps({STT_MODEL: KEY_ENV}),
    )

    stopped = media_pipeline.wait_job(jobs[crossing], ("failed",))
    assert (stopped["error_stage"], stopped["error_reason"]) == ("transcribe", "budget_exceeded")
    [ready] = media_pipeline.read("ready", 1, timeout=120)
    assert ready["job_id"] == jobs[within]  # the customer within budget was transcribed
    assert len(endpoint.requests) == 1  # by the provider, once: only the customer within budget
