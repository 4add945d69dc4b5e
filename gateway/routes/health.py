"""Liveness and readiness: for the orchestrator, without auth.

Both answer without touching a dependency: ``/readyz`` reads the last round of the
background probes (``gateway/readiness.py``). Prometheus metrics are served on a
listener of their own (``VI_METRICS_PORT``), never on this public one.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.api_errors import ApiError, responses
from gateway.readiness import ReadinessDep
from vidinsight.errors import Reason

router = APIRouter(tags=["operations"])
REASON_FOR_DEPENDENCY = {
    "postgres": Reason.DATABASE_UNAVAILABLE,
    "kafka": Reason.BROKER_UNAVAILABLE,
    "registry": Reason.REGISTRY_UNAVAILABLE,
    "probes": Reason.TIMEOUT,
}


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
async def readyz(readiness: ReadinessDep) -> Readiness:
    """PostgreSQL, Kafka and the schema registry were reachable at the last background
    probe (every ``VI_GATEWAY_READINESS_INTERVAL_SECONDS``); 503 names the first down,
    or says the probes themselves stopped."""
    checks = readiness.current()
    if checks.failed:
        detail = "; ".join(f"{name}: {checks.results[name]}" for name in checks.failed)
        raise ApiError(
            REASON_FOR_DEPENDENCY[checks.failed[0]],
            f"not ready: {detail}",
            status=503,
            headers={"Retry-After": "5"},
        )
    return Readiness(status="ready", checks=checks.results)
