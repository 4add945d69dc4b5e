"""What every request handler of one gateway process shares: settings, pool, clients.

Built once when the app starts and closed when it stops; routes reach it through
the ``context`` dependency instead of globals, so one test process can run several
gateways with different settings side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from confluent_kafka.admin import AdminClient
from fastapi import Depends, Request

from sinks.blobs import BlobStore
from sinks.db import Pool
from telemetry.analytics import Analytics
from topics.catalogue import JOBS_REQUESTED_TOPIC
from vidinsight.settings import Settings

if TYPE_CHECKING:
    from gateway.backpressure import LagMonitor
    from gateway.firebase import FirebaseVerifier
    from gateway.outbox import Publisher


@dataclass
class GatewayContext:
    settings: Settings
    pool: Pool
    publisher: Publisher
    firebase: FirebaseVerifier
    lag: LagMonitor
    blobs: BlobStore
    admin: AdminClient
    analytics: Analytics

    @property
    def jobs_topic(self) -> str:
        """Where job requests go (configurable so tests use a topic of their own)."""
        return jobs_topic(self.settings)


def jobs_topic(settings: Settings) -> str:
    """The topic the gateway produces job requests to."""
    return settings.gateway_jobs_topic or JOBS_REQUESTED_TOPIC


def context(request: Request) -> GatewayContext:
    """The dependency that hands a route its gateway's shared state."""
    ctx: GatewayContext = request.app.state.context
    return ctx


# A route parameter of this type receives its gateway's shared state.
Context = Annotated[GatewayContext, Depends(context)]
