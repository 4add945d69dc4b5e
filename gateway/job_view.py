"""How a job looks to its customer: status, per-stage progress and error.

Built from the jobs row and the job's stage runs. A stage with several runs (the
transcription of each audio chunk is one run) is summarised as one entry: running
while any run is, failed if any was dead-lettered, succeeded when all succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from topics.catalogue import STAGE_NAMES

# The stages whose completion is progress (notify runs after the job is complete).
PROGRESS_STAGES = tuple(s for s in STAGE_NAMES if s != "notify")


class StageView(BaseModel):
    status: Literal["running", "succeeded", "failed", "cancelled"]
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


class JobError(BaseModel):
    reason: str
    message: str
    stage: str | None


class JobView(BaseModel):
    job_id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    stages: dict[str, StageView]
    progress: float = Field(ge=0, le=1)
    error: JobError | None
    created_at: datetime
    updated_at: datetime


def job_view(job: dict[str, Any], runs: Sequence[dict[str, Any]]) -> JobView:
    """The customer's view of a job row and its stage runs."""
    stages = _stages(runs)
    return JobView(
        job_id=job["job_id"],
        status=job["status"],
        stages=stages,
        progress=_progress(job["status"], stages),
        error=_error(job),
        created_at=job["created_at"],
        updated_at=job["updated_at"],
    )


def _stages(runs: Sequence[dict[str, Any]]) -> dict[str, StageView]:
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_stage.setdefault(run["stage"], []).append(run)
    return {stage: _summary(stage_runs) for stage, stage_runs in by_stage.items()}


def _summary(runs: list[dict[str, Any]]) -> StageView:
    statuses = {r["status"] for r in runs}
    if "dead_lettered" in statuses:
        status: Literal["running", "succeeded", "failed", "cancelled"] = "failed"
    elif statuses == {"succeeded"}:
        status = "succeeded"
    elif "cancelled" in statuses and statuses <= {"cancelled", "succeeded"}:
        status = "cancelled"  # the job was cancelled; what ran before it finished
    else:
        status = "running"
    started = [r["started_at"] for r in runs if r["started_at"] is not None]
    finished = [r["finished_at"] for r in runs if r["finished_at"] is not None]
    return StageView(
        status=status,
        attempts=max(int(r["attempts"]) for r in runs),
        started_at=min(started) if started else None,
        finished_at=max(finished) if status != "running" and finished else None,
    )


def _progress(status: str, stages: dict[str, StageView]) -> float:
    if status == "completed":
        return 1.0
    done = sum(1 for s in PROGRESS_STAGES if s in stages and stages[s].status == "succeeded")
    return round(done / len(PROGRESS_STAGES), 4)


def _error(job: dict[str, Any]) -> JobError | None:
    if job["error_reason"] is None:
        return None
    return JobError(
        reason=job["error_reason"], message=job["error_message"] or "", stage=job["error_stage"]
    )
