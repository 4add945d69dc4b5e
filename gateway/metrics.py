"""The gateway's Prometheus metrics (module-level: one registry per process).

They are served on a listener of their own (``VI_METRICS_HOST``:``VI_METRICS_PORT``, as
every worker serves its metrics), never on the public API port: the exposition names
routes, counts and the jobs in flight, which is nobody's business outside the cluster.

Besides its own requests, the gateway exports the jobs still in flight, read from the
jobs table every ``VI_GATEWAY_JOBS_METRICS_INTERVAL_SECONDS`` on a thread (a scrape
reads the last values, so scrapes cost the database nothing): it is the one always-on
process that holds a database pool and no pipeline partition, so a stuck job is
visible even when the stage that should move it is the one that is down.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from gateway.periodic import Periodic
from sinks.db import Pool
from sinks.jobs import in_flight_by_status
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

# The background read must not hang on a busy pool or a slow database: waiting for a
# connection and the jobs query each give up after this.
JOBS_QUERY_TIMEOUT_MS = 2000

REQUESTS = Histogram(
    "vidinsight_gateway_request_duration_seconds",
    "Gateway request latency by route template, method and status",
    ["route", "method", "status"],
)
JOBS_SUBMITTED = Counter("vidinsight_gateway_jobs_submitted_total", "Jobs accepted by the gateway")
SHED = Counter(
    "vidinsight_gateway_shed_total",
    "Submissions refused at the door, by cause (backpressure: 503, quota: 429)",
    ["cause"],
)
# Both causes start at zero, so the first refusal shows in rate().
for _cause in ("backpressure", "quota"):
    SHED.labels(_cause)
UPLOADED_BYTES = Counter("vidinsight_gateway_uploaded_bytes_total", "Bytes of media uploaded")
JOBS_IN_FLIGHT = Gauge(
    "vidinsight_jobs_in_flight",
    "Jobs queued or running, read from the jobs table every few seconds",
    ["status"],
)
JOBS_OLDEST_SECONDS = Gauge(
    "vidinsight_jobs_oldest_in_flight_seconds",
    "Seconds the oldest queued or running job has spent in its status (0 when none)",
    ["status"],
)


def observe_jobs(pool: Pool) -> None:
    """Refresh the in-flight gauges from PostgreSQL; on failure keep the last values.

    A failed read is logged, not raised: the rest of the metrics (request errors among
    them) matter most exactly when the database is in trouble.
    """
    try:
        with pool.connection(timeout=JOBS_QUERY_TIMEOUT_MS / 1000) as conn, conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {JOBS_QUERY_TIMEOUT_MS}")
            by_status = in_flight_by_status(conn)
    except Exception as exc:
        log.warning("could not read jobs in flight for metrics: %s", exc)
        return
    for status, (count, oldest_seconds) in by_status.items():
        JOBS_IN_FLIGHT.labels(status).set(count)
        JOBS_OLDEST_SECONDS.labels(status).set(oldest_seconds)


class MetricsListener:
    """The Prometheus endpoint on its own port, and the thread that refreshes the job gauges."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host
        )
        self.port = int(self._server.server_port)
        self._jobs = Periodic(
            "jobs-gauges",
            settings.gateway_jobs_metrics_interval_seconds,
            lambda: observe_jobs(pool),
        )
        self._jobs.start()
        log.info("metrics on port %d", self.port)

    def close(self) -> None:
        self._jobs.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
