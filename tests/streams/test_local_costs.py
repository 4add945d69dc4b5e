"""Our own work is billed by its input, never by the time it took (invariant I2); the
time it took is an operator's metric.

The ingest, preprocess, scenes and transcribe handlers are called directly, without Kafka, on
the same talk twice, each handler's output feeding the next, with the real PostgreSQL
and a blob store of the test's own: both runs must bill exactly the same lines, and
those lines must be the media's probed length and the chunk's audio length. When the
lines were measured CPU time, no two runs agreed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from sinks.blobs import BlobStore
from sinks.db import Pool
from streams.costs.events import CostEvent
from streams.ingest import ingest
from streams.preprocess import preprocess
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, StageResult
from streams.scenes import scenes
from streams.transcribe import transcribe
from telemetry.cpu import measure_cpu
from tests.fixtures.media import GeneratedMedia
from vidinsight.settings import Settings

CUSTOMER = "cust-local-costs"
DEADLINE_SECONDS = 300.0


def _context(
    settings: Settings, pool: Pool, blobs: BlobStore, stage: str, value: Mapping[str, Any]
) -> HandlerContext:
    """What the runtime would hand ``stage``'s handler for one message holding ``value``."""
    inbound = Inbound(
        key=str(value["job_id"]),
        value=value,
        topic=f"test.{stage}",
        partition=0,
        offset=0,
        timestamp_ms=int(time.time() * 1000),
        attempt=1,
    )
    return HandlerContext(
        inbound, stage, settings, pool, blobs, deadline=time.monotonic() + DEADLINE_SECONDS
    )


def _handle(
    settings: Settings, pool: Pool, blobs: BlobStore, stage: str, value: Mapping[str, Any]
) -> StageResult:
    ctx = _context(settings, pool, blobs, stage, value)
    if stage == "ingest":
        return ingest(ctx.inbound, ctx, output_topic="ingested")
    if stage == "preprocess":
        return preprocess(ctx.inbound, ctx, chunks_topic="chunks", ready_topic="ready")
    if stage == "scenes":
        return scenes(ctx.inbound, ctx, ready_topic="ready")
    return transcribe(ctx.inbound, ctx, ready_topic="ready")


def _bill(events: list[CostEvent]) -> list[tuple[Any, ...]]:
    """A job's cost lines without what names the job or the moment."""
    return sorted(
        (e["stage"], e["provider"], e["model"], e["unit"], e["quantity"], e["amount_usd_micros"])
        for e in events
    )


def _process(
    settings: Settings, pool: Pool, blobs: BlobStore, video: Path
) -> tuple[list[CostEvent], Mapping[str, Any], Mapping[str, Any]]:
    """One job of ``video`` through ingest, preprocess, scenes and the transcription of
    its first chunk: the cost events, the MediaIngested value and the AudioChunk value."""
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    source = blobs.put_file(video, f"uploads/{CUSTOMER}/{job_id}/talk.mp4")
    requested = {"job_id": job_id, "customer_id": CUSTOMER, "source_uri": source}
    ingested = _handle(settings, pool, blobs, "ingest", requested)
    media = ingested.outputs[0].value
    preprocessed = _handle(settings, pool, blobs, "preprocess", media)
    chunk = preprocessed.outputs[0].value
    found = _handle(settings, pool, blobs, "scenes", media)
    transcribed = _handle(settings, pool, blobs, "transcribe", chunk)
    events = [
        *ingested.cost_events,
        *preprocessed.cost_events,
        *found.cost_events,
        *transcribed.cost_events,
    ]
    return [dict(event) for event in events], media, chunk


def _cpu_counted(stage: str, provider: str, model: str) -> float:
    labels = {"stage": stage, "provider": provider, "model": model}
    return REGISTRY.get_sample_value("vidinsight_stage_cpu_seconds_total", labels) or 0.0


WORKED = (
    ("ingest", "local", "probe"),
    ("preprocess", "local", "audio"),
    ("scenes", "local", "scenes"),
    ("transcribe", "local", "faster-whisper-tiny.en"),
)


def test_the_same_talk_bills_the_same_lines_of_its_input(
    settings: Settings, db_pool: Pool, generated_media: GeneratedMedia, tmp_path: Path
) -> None:
    short_chunks = settings.model_copy(update={"chunk_seconds": 15.0, "chunk_search_seconds": 5.0})
    blobs = BlobStore(tmp_path.resolve().as_uri())
    counted = {labels: _cpu_counted(*labels) for labels in WORKED}
    first, media, chunk = _process(short_chunks, db_pool, blobs, generated_media.video)
    second, _, _ = _process(short_chunks, db_pool, blobs, generated_media.video)
    assert all(_cpu_counted(*labels) > counted[labels] for labels in WORKED)

    assert _bill(first) == _bill(second)
    media_seconds = round(float(media["duration_seconds"]), 3)
    audio_seconds = round(float(chunk["end_seconds"]) - float(chunk["start_seconds"]), 3)
    local = {(e["stage"], e["model"]): (e["unit"], e["quantity"]) for e in first}
    assert local[("ingest", "probe")] == ("media_seconds", media_seconds)
    assert local[("preprocess", "audio")] == ("media_seconds", media_seconds)
    assert local[("scenes", "scenes")] == ("media_seconds", media_seconds)
    assert local[("transcribe", "faster-whisper-tiny.en")] == ("audio_seconds", audio_seconds)
    assert all(e["amount_usd_micros"] > 0 for e in first)


def test_steps_running_at_once_share_the_cpu_time_instead_of_each_counting_it() -> None:
    """Two threads busy at once: each step's own before-and-after difference would count
    both threads' work, twice the process's CPU time; the shares add up to it."""

    def busy(model: str) -> None:
        with measure_cpu("cpu-test", "local", model):
            sum(i * i for i in range(2_000_000))

    models = [f"busy-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    threads = [threading.Thread(target=busy, args=(model,)) for model in models]
    began = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = time.process_time() - began
    shares = [_cpu_counted("cpu-test", "local", model) for model in models]
    assert all(share > 0 for share in shares)
    assert 0.5 * spent < sum(shares) <= spent + 1e-6
