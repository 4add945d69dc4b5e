"""Runs the cost aggregator process: logs, metrics, migrations, then the Faust worker.

faust's Worker (from mode) handles SIGTERM and SIGINT itself: it stops the agent after
the batch in hand, commits the acked offsets and leaves the group, then exits.
"""

from __future__ import annotations

import logging
import time

import faust

from schemas.codec import Codec
from sinks.db import Pool, create_pool, translate_errors
from sinks.migrate import migrate
from streams.costs.app import build_app, input_topic
from telemetry import logs
from telemetry.metrics import serve
from vidinsight.errors import TransientError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)


def _migrate_when_reachable(pool: Pool, settings: Settings) -> None:
    """Apply migrations at start-up, waiting out a database that is not up yet.

    An aggregator started before PostgreSQL (or during its restart) waits instead of
    exiting; its events wait in Kafka meanwhile.
    """
    attempt = 0
    while True:
        try:
            with translate_errors(), pool.connection() as conn:
                migrate(conn)
            return
        except TransientError as exc:
            attempt += 1
            log.warning(
                "database not reachable at start-up: %s",
                exc.message,
                extra={"reason": exc.reason, "attempt": attempt, "stage": "costs"},
            )
            time.sleep(min(settings.transient_backoff_max_seconds, 0.5 * attempt))


def run(settings: Settings) -> int:
    """Run the aggregator until SIGTERM or SIGINT; return the process exit code."""
    logs.configure(settings.log_level)
    port = serve(settings.metrics_port, settings.metrics_host)
    pool = create_pool(settings, name="costs")
    _migrate_when_reachable(pool, settings)
    app = build_app(settings, pool, Codec(settings.registry_url))
    log.info(
        "cost aggregator starting; metrics on port %d",
        port,
        extra={"stage": "costs", "topic": input_topic(settings), "detail": settings.costs_app_id},
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
