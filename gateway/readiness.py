"""Readiness: PostgreSQL, Kafka and the schema registry, probed in the background.

``/readyz`` is unauthenticated and polled by orchestrators and load balancers; probing
the three dependencies per request would let anyone turn requests into database, broker
and registry calls. The probes run on a thread of their own, the first round as soon as
the gateway starts and then every ``VI_GATEWAY_READINESS_INTERVAL_SECONDS``; ``/readyz``
answers from the last round. Start-up never waits for a round: a probe of a dependency
that is down takes its whole timeout, and the gateway must accept requests meanwhile (a
job waits in the outbox until Kafka is back). Until the first round ends, ``/readyz``
says the probes are starting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request

from gateway.context import GatewayContext
from gateway.periodic import Periodic
from sinks.db import transaction

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Checks:
    """One round of probes: "ok" or what went wrong, per dependency, in probe order."""

    results: dict[str, str]
    checked_at: float  # time.time() when the round ended

    @property
    def failed(self) -> list[str]:
        return [name for name, result in self.results.items() if result != "ok"]


class Readiness:
    """The last round of dependency probes, refreshed on a thread of its own."""

    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        interval = ctx.settings.gateway_readiness_interval_seconds
        self._periodic = Periodic("readiness", interval, self.check)
        self.rounds = 0  # rounds of probes run (a burst of /readyz must not move it)
        self.last: Checks | None = None  # None until the first round has ended
        # Past this age the last round says nothing: the probing thread is stuck or dead.
        self._stale_after = 3 * interval + 3 * PROBE_TIMEOUT_SECONDS

    def current(self) -> Checks:
        """The last round, or a failed ``probes`` check: none has ended yet, or the last
        is too old to trust."""
        last = self.last
        if last is None:
            return Checks({"probes": "starting"}, 0.0)
        age = time.time() - last.checked_at
        if age <= self._stale_after:
            return last
        return Checks({"probes": f"stale (last round {age:.0f} s ago)"}, last.checked_at)

    def start(self) -> None:
        """Start probing on the thread, the first round at once; never wait for it here."""
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def check(self) -> None:
        """One round of probes."""
        results = {
            "postgres": _check_postgres(self._ctx),
            "kafka": _check_kafka(self._ctx),
            "registry": _check_registry(self._ctx),
        }
        self.last = Checks(results, time.time())
        self.rounds += 1  # after ``last``: a waiter that sees the round sees its results


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


def readiness(request: Request) -> Readiness:
    """The dependency that hands a route its gateway's readiness."""
    current: Readiness = request.app.state.readiness
    return current


# A route parameter of this type receives its gateway's readiness.
ReadinessDep = Annotated[Readiness, Depends(readiness)]
