"""Ingest: a requested job's source becomes a probed media blob (JobRequested -> MediaIngested).

Both entry paths converge here: a job produced straight to Kafka by an upstream
system gets its row now, so a rejection below is recorded as a failed job. The
source is a blob the gateway already stored, or an http(s) URL fetched behind the
SSRF guard with size and time caps. Whatever cannot be processed is rejected with
its reason code (PermanentError: the runtime dead-letters it and fails the job).
Media longer than ``VI_SEGMENT_SECONDS`` is announced once per time segment
(``media.segments``), so the branches after it share one long video across workers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from media.fetch import fetch, parse_networks
from media.probe import MediaInfo, probe
from media.segments import Segment, plan_segments
from sinks import jobs
from sinks.blobs import file_sha256
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu
from vidinsight.errors import PermanentError, Reason
from vidinsight.identifiers import check_identifier


def ensure_job(ctx: HandlerContext, value: Mapping[str, Any]) -> None:
    """Create the job row if an upstream system produced the request directly; mark it running.

    The request is already on Kafka, so the row is marked published: otherwise the
    gateway's outbox relay would take it for a request it failed to send and send it again.
    """
    with ctx.transaction() as conn:
        jobs.create_job(
            conn,
            job_id=value["job_id"],
            customer_id=value["customer_id"],
            source_uri=value["source_uri"],
            webhook_url=value.get("webhook_url"),
            options=dict(value.get("options") or {}),
        )
        jobs.mark_published(conn, value["job_id"])
        jobs.set_status(conn, value["job_id"], "running")


def store_source(ctx: HandlerContext, inbound: Inbound, source: str) -> tuple[str, str, int]:
    """The source as a blob of ours: (uri, sha256, size). Copies http(s); hashes uploads.

    An uploaded blob must be one of the customer's own uploads (the gateway stores them
    under ``uploads/<customer_id>/``): a job cannot name another tenant's media.
    """
    store, settings = ctx.blobs, ctx.settings
    key = store.key_of(source)
    if key is not None:
        if key.split("/")[:2] != ["uploads", inbound.customer_id]:
            raise PermanentError(
                Reason.SOURCE_FORBIDDEN, "the source is not an upload of this job's customer"
            )
        with store.local_path(source) as path:
            return source, file_sha256(path), path.stat().st_size
    if source.startswith(("http://", "https://")):
        key = f"media/{inbound.job_id}/source"
        with store.open_write(key) as target:
            fetched = fetch(
                source,
                target,
                max_bytes=settings.max_media_bytes,
                timeout_seconds=settings.fetch_timeout_seconds,
                connect_timeout_seconds=settings.fetch_connect_timeout_seconds,
                idle_timeout_seconds=settings.fetch_idle_timeout_seconds,
                max_redirects=settings.fetch_max_redirects,
                allowed=parse_networks(settings.fetch_allowed_networks),
                deadline=ctx.deadline,
            )
        return store.uri(key), fetched.sha256, fetched.size_bytes
    raise PermanentError(
        Reason.SOURCE_FORBIDDEN, "the source is neither an upload nor an http(s) URL"
    )


def media_ingested(inbound: Inbound, uri: str, sha256: str, info: MediaInfo) -> dict[str, Any]:
    return {
        "job_id": inbound.job_id,
        "customer_id": inbound.customer_id,
        "media_uri": uri,
        "sha256": sha256,
        "size_bytes": info.size_bytes,
        "duration_seconds": info.duration_seconds,
        "container": info.container,
        "has_audio": info.has_audio,
        "has_video": info.has_video,
        "video": None
        if info.video is None
        else {"codec": info.video.codec, "width": info.video.width,
              "height": info.video.height, "fps": info.video.fps},
        "audio": None
        if info.audio is None
        else {"codec": info.audio.codec, "sample_rate": info.audio.sample_rate,
              "channels": info.audio.channels},
        "ingested_at_ms": int(time.time() * 1000),
    }  # fmt: skip


def ingest(inbound: Inbound, ctx: HandlerContext, output_topic: str) -> StageResult:
    """Fetch, hash and probe the source; reject what cannot be processed.

    The probe is billed per second of the media as probed (to the millisecond), not by
    the time it took: the same source costs the same in every run.
    """
    check_identifier("job_id", inbound.job_id)
    check_identifier("customer_id", inbound.customer_id or "")
    ensure_job(ctx, inbound.value)
    ctx.ensure_within_budget("a new job")  # the gateway's 402, for jobs sent straight to Kafka
    source = str(inbound.value["source_uri"])
    with measure_cpu(ctx.stage, "local", "probe"):
        uri, sha256, size = store_source(ctx, inbound, source)
        with ctx.blobs.local_path(uri) as path:
            info = probe(
                path,
                max_bytes=ctx.settings.max_media_bytes,
                max_duration_seconds=ctx.settings.max_duration_seconds,
                max_picture_pixels=ctx.settings.max_picture_pixels,
                deadline=ctx.deadline,
            )
    costs: list[Mapping[str, Any]] = [
        ctx.cost("probe", "local", "probe", "media_seconds", round(info.duration_seconds, 3))
    ]
    if uri != source:
        costs.append(ctx.cost("source", "storage", "blob", "storage_bytes", size))
    value = media_ingested(inbound, uri, sha256, info)
    outputs = [
        Output(output_topic, "MediaIngested", f"{inbound.job_id}:{segment.index}",
               {**value, **segment_fields(segment)})
        for segment in plan_segments(info.duration_seconds, ctx.settings.segment_seconds)
    ]  # fmt: skip
    return StageResult(outputs=outputs, cost_events=costs)


def segment_fields(segment: Segment) -> dict[str, Any]:
    """What a MediaIngested says of the segment it is for."""
    return {
        "segment_index": segment.index,
        "segment_count": segment.count,
        "segment_start_seconds": segment.start_seconds,
        "segment_end_seconds": segment.end_seconds,
    }


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The ingest stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "ingest", topics, group_id, lambda t: partial(ingest, output_topic=t["output"])
    )


STAGE = build()
