"""Synthesise: transcript, scenes and analysis become one insight document (AnalysisDone ->
JobCompleted).

The document is what a customer reads (``GET /v1/jobs/{id}/insights``): the transcript
on the video timeline, the scenes with the URLs where the gateway serves their
keyframes, and the analysis, under a ``schema_version`` (docs/insights-schema.md) so
clients can tell a changed document from a broken one. Captions are rendered from the
same transcript segments, so they say what the transcript says. The document, the
captions and the job's completion are stored in the runtime's one transaction, so a
job is completed exactly when its insights can be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from media.captions import TimedText, TimedWord, build_cues, render_srt, render_vtt
from sinks.db import Connection
from sinks.insights import get_analysis, save_insight
from sinks.jobs import TERMINAL_STATUSES, get_job, set_status
from sinks.scenes import job_scenes
from sinks.transcripts import job_chunks
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from telemetry.cpu import measure_cpu
from vidinsight.errors import PermanentError, Reason

log = logging.getLogger("vidinsight.synthesise")

SCHEMA_VERSION = "1.0"
ENDED_OTHERWISE = TERMINAL_STATUSES - {"completed"}


def insights_path(job_id: str) -> str:
    """Where the gateway serves the job's insights."""
    return f"/v1/jobs/{job_id}/insights"


def keyframe_path(job_id: str, scene_index: int) -> str:
    """Where the gateway serves a scene's keyframe."""
    return f"/v1/jobs/{job_id}/keyframes/{scene_index}.jpg"


def transcript_of(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole transcript: its text and its segments, already on the video timeline."""
    segments = [
        {"start": float(s["start"]), "end": float(s["end"]), "text": str(s["text"]).strip()}
        for chunk in chunks
        for s in chunk["segments"]
        if str(s["text"]).strip()
    ]
    text = " ".join(str(chunk["text"]).strip() for chunk in chunks if str(chunk["text"]).strip())
    return {"text": text, "segments": segments}


def scenes_of(job_id: str, scenes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scenes as the customer sees them: times and the keyframe's URL on the API."""
    return [
        {
            "index": scene["scene_index"],
            "start": float(scene["start_seconds"]),
            "end": float(scene["end_seconds"]),
            "keyframe_url": (
                keyframe_path(job_id, scene["scene_index"]) if scene["keyframe_uri"] else None
            ),
        }
        for scene in scenes
    ]


def document_of(conn: Connection, job_id: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's insight document from what the earlier stages stored."""
    analysis = get_analysis(conn, job_id)
    if analysis is None:
        raise PermanentError(Reason.NOT_FOUND, f"job {job_id} has no stored analysis")
    duration = max([float(c["end_seconds"]) for c in chunks], default=0.0)
    return {
        "schema_version": SCHEMA_VERSION,
        "job_id": job_id,
        "duration_seconds": duration,
        "language": chunks[0]["language"] if chunks else None,
        "model": analysis["model"],
        "prompt_version": analysis["prompt_version"],
        "transcript": transcript_of(chunks),
        "scenes": scenes_of(job_id, job_scenes(conn, job_id)),
        **analysis["document"],
    }


def captions_of(chunks: list[dict[str, Any]]) -> tuple[str, str]:
    """WebVTT and SRT captions of the transcript's segments, timed by their words."""
    cues = build_cues(
        TimedText(float(s["start"]), float(s["end"]), str(s["text"]), _words(s))
        for chunk in chunks
        for s in chunk["segments"]
    )
    return render_vtt(cues), render_srt(cues)


def _words(segment: Mapping[str, Any]) -> tuple[TimedWord, ...]:
    return tuple(
        TimedWord(float(w["start"]), float(w["end"]), str(w["word"]))
        for w in segment.get("words") or []
    )


def covered_seconds(document: Mapping[str, Any]) -> float:
    """Seconds of the video the document covers, to the millisecond: to the end of its
    last audio chunk or of its last scene, whichever is later.

    Synthesise is billed by it rather than by the time it took, so the same video costs
    the same in every run. Its input does not carry the video's probed duration; both
    ends are fixed by the media (chunks cover the audio, scenes the picture).
    """
    ends = [float(document["duration_seconds"]), *(scene["end"] for scene in document["scenes"])]
    return round(max(ends), 3)


def synthesise(inbound: Inbound, ctx: HandlerContext, completed_topic: str) -> StageResult:
    """Assemble the job's insights and announce the job completed.

    A job that already ended otherwise (failed by a replayed message; a cancelled one
    never gets here) stays as it ended: nothing is stored or announced for it.
    """
    with measure_cpu(ctx.stage, "local", "synthesis"):
        with ctx.transaction() as conn:
            job = get_job(conn, inbound.job_id)
            if job is not None and job["status"] in ENDED_OTHERWISE:
                log.warning("job already %s; no insights assembled", job["status"])
                return StageResult()
            chunks = job_chunks(conn, inbound.job_id)
            document = document_of(conn, inbound.job_id, chunks)
        vtt, srt = captions_of(chunks)
    log.info(
        "insights assembled",
        extra={"detail": {"schema_version": SCHEMA_VERSION,
                          "segments": len(document["transcript"]["segments"])}},
    )  # fmt: skip
    completed = {
        "job_id": inbound.job_id,
        "customer_id": inbound.customer_id,
        "status": "completed",
        "reason": None,
        "insights_uri": insights_path(inbound.job_id),
        "completed_at_ms": int(time.time() * 1000),
    }
    cost = ctx.cost("document", "local", "synthesis", "media_seconds", covered_seconds(document))
    return StageResult(
        outputs=[Output(completed_topic, "JobCompleted", inbound.job_id, completed)],
        cost_events=[cost],
        payload={"document": document, "vtt": vtt, "srt": srt},
    )


def store(conn: Connection, inbound: Inbound, result: StageResult) -> None:
    """Insights, captions and the job's completion, together or not at all."""
    payload = result.payload
    if payload is None:
        return  # the job had already ended otherwise
    save_insight(
        conn, inbound.job_id, payload["document"], SCHEMA_VERSION, payload["vtt"], payload["srt"]
    )
    if not set_status(conn, inbound.job_id, "completed"):
        log.warning("job already ended; its insights are stored but its status stays")


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The synthesise stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "synthesise",
        topics,
        group_id,
        lambda t: partial(synthesise, completed_topic=t["output"]),
        store=store,
    )


STAGE = build()
