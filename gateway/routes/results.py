"""A finished job's results: the insight document, captions and keyframes.

Everything here is 409 (``job_not_completed``) until the job has completed, and 404
for another customer's job. Scenes come from the scenes table, each with the URL of
its keyframe on this API; only blobs of the platform's blob store are served.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api_errors import ApiError, responses
from gateway.auth import CustomerId
from gateway.context import Context, GatewayContext
from gateway.job_access import JobId, owned_job
from sinks.db import Connection, transaction
from sinks.insights import get_insight
from sinks.scenes import job_scenes
from vidinsight.errors import PermanentError, Reason

router = APIRouter(prefix="/v1/jobs", tags=["results"])


class Segment(BaseModel):
    model_config = ConfigDict(extra="allow")
    start: float
    end: float
    text: str


class Transcript(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str = ""
    segments: list[Segment] = Field(default_factory=list)


class Scene(BaseModel):
    index: int
    start: float
    end: float
    keyframe_url: str | None


class Insights(BaseModel):
    """The insight document; fields beyond these are passed through as the pipeline wrote them."""

    model_config = ConfigDict(extra="allow")
    job_id: str
    transcript: Transcript
    scenes: list[Scene]
    summary: str = ""
    chapters: list[dict[str, Any]] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    action_items: list[Any] = Field(default_factory=list)
    sentiment: Any = None


@router.get("/{job_id}/insights", response_model=Insights, responses=responses(401, 404, 409, 503))
def insights(job_id: JobId, customer_id: CustomerId, ctx: Context) -> Insights:
    """The job's insights: transcript, scenes, summary, chapters, keywords, actions, sentiment."""
    with transaction(ctx.pool) as conn:
        row = _completed_insight(conn, job_id, customer_id)
        scenes = job_scenes(conn, job_id)
    document = dict(row["document"])
    document.pop("scenes", None)
    document["job_id"] = job_id
    document["scenes"] = [
        Scene(
            index=s["scene_index"],
            start=s["start_seconds"],
            end=s["end_seconds"],
            keyframe_url=(
                f"/v1/jobs/{job_id}/keyframes/{s['scene_index']}.jpg" if s["keyframe_uri"] else None
            ),
        )
        for s in scenes
    ]
    return Insights.model_validate(document)


def _completed_insight(conn: Connection, job_id: str, customer_id: str) -> dict[str, Any]:
    job = owned_job(conn, job_id, customer_id)
    if job["status"] != "completed":
        raise ApiError(Reason.JOB_NOT_COMPLETED, f"job {job_id} is {job['status']}")
    row = get_insight(conn, job_id, customer_id)
    if row is None:
        raise ApiError(Reason.JOB_NOT_COMPLETED, f"job {job_id} has no insights yet")
    return row


def _captions(ctx: GatewayContext, job_id: str, customer_id: str, column: str) -> str:
    with transaction(ctx.pool) as conn:
        row = _completed_insight(conn, job_id, customer_id)
    text = row[column]
    if not text:
        raise ApiError(Reason.NOT_FOUND, f"job {job_id} has no captions")
    return str(text)


def _text_response(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media_type: {"schema": {"type": "string"}}}},
        **responses(401, 404, 409, 503),
    }


@router.get("/{job_id}/captions.vtt", response_class=Response, responses=_text_response("text/vtt"))
def captions_vtt(job_id: JobId, customer_id: CustomerId, ctx: Context) -> PlainTextResponse:
    """WebVTT captions of the transcript."""
    return PlainTextResponse(
        _captions(ctx, job_id, customer_id, "captions_vtt"), media_type="text/vtt"
    )


@router.get(
    "/{job_id}/captions.srt",
    response_class=Response,
    responses=_text_response("application/x-subrip"),
)
def captions_srt(job_id: JobId, customer_id: CustomerId, ctx: Context) -> PlainTextResponse:
    """SubRip captions of the transcript."""
    return PlainTextResponse(
        _captions(ctx, job_id, customer_id, "captions_srt"), media_type="application/x-subrip"
    )


@router.get(
    "/{job_id}/keyframes/{n}.jpg",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        **responses(401, 404, 409, 503),
    },
)
def keyframe(
    job_id: JobId,
    n: Annotated[int, PathParam(ge=0, le=100_000, description="scene index, from 0")],
    customer_id: CustomerId,
    ctx: Context,
) -> Response:
    """The keyframe of scene ``n`` as JPEG."""
    with transaction(ctx.pool) as conn:
        _completed_insight(conn, job_id, customer_id)
        scenes = {s["scene_index"]: s for s in job_scenes(conn, job_id)}
    scene = scenes.get(n)
    uri = scene["keyframe_uri"] if scene else None
    if not uri or not ctx.blobs.owns(uri):
        raise ApiError(Reason.NOT_FOUND, f"job {job_id} has no keyframe {n}")
    try:
        with ctx.blobs.local_path(uri) as path:
            return Response(path.read_bytes(), media_type="image/jpeg")
    except PermanentError as exc:
        raise ApiError(Reason.NOT_FOUND, f"job {job_id} has no keyframe {n}") from exc
