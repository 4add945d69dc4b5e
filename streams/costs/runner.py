"""Runs the cost aggregator process: logs, metrics, migrations, then the Faust worker.

faust's Worker (from mode) handles SIGTERM and SIGINT itself: it stops the agent after
the batch in hand, commits the acked offsets and leaves the group, then exits.
"""

from __future__ import annotations

import logging

import faust

from schemas.codec import Codec
from sinks.db import create_pool
from sinks.migrate import migrate_when_reachable
from streams.costs.app import build_app
from streams.costs.events import costs_topic
from telemetry import logs
from telemetry.metrics import serve
from vidinsight.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Run the aggregator until SIGTERM or SIGINT; return the process exit code."""
    logs.configure(settings.log_level)
    port = serve(settings.metrics_port, settings.metrics_host)
    pool = create_pool(settings, name="costs")
    migrate_when_reachable(settings, "costs")
    app = build_app(settings, pool, Codec(settings.registry_url))
    log.info(
        "cost aggregator starting; metrics on port %d",
        port,
        extra={"stage": "costs", "topic": costs_topic(settings), "detail": settings.costs_app_id},
    )
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True)
    worker.spinner = None  # a terminal spinner would break the JSON log lines (I4)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        pool.close()
    log.info("cost aggregator stopped", extra={"stage": "costs", "event": "stopped"})
    return code
