"""Liveness, readiness and metrics: for the orchestrator and Prometheus, without auth."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from gateway import metrics
from gateway.api_errors import ApiError, responses
from gateway.context import Context, GatewayContext
from sinks.db import transaction
from vidinsight.errors import Reason

router = APIRouter(tags=["operations"])
PROBE_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is serving requests."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=responses(503))
def readyz(ctx: Context) -> Readiness:
    """PostgreSQL, Kafka and the schema registry are all reachable; 503 names the first down."""
    checks = {
        "postgres": _check_postgres(ctx),
        "kafka": _check_kafka(ctx),
        "registry": _check_registry(ctx),
    }
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        reason = {
            "postgres": Reason.DATABASE_UNAVAILABLE,
            "kafka": Reason.BROKER_UNAVAILABLE,
            "registry": Reason.REGISTRY_UNAVAILABLE,
        }[failed[0]]
        detail = "; ".join(f"{name}: {checks[name]}" for name in failed)
        raise ApiError(reason, f"not ready: {detail}", headers={"Retry-After": "5"})
    return Readiness(status="ready", checks=checks)


def _check_postgres(ctx: GatewayContext) -> str:
    try:
        with transaction(ctx.pool) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _check_kafka(ctx: GatewayContext) -> str:
    try:
        ctx.admin.list_topics(timeout=PROBE_TIMEOUT_SECONDS)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _check_registry(ctx: GatewayContext) -> str:
    try:
        answer = httpx.get(f"{ctx.settings.registry_url}/subjects", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if answer.status_code == 200 else f"answered {answer.status_code}"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def prometheus_metrics(ctx: Context) -> Response:
    """Prometheus metrics of this process in the text exposition format."""
    metrics.observe_jobs(ctx.pool)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
