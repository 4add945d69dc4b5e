"""Assembles a stage worker process: logs, metrics, clients, pool, signals; then runs it."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from schemas.codec import Codec
from sinks import jobs
from sinks.blobs import BlobStore
from sinks.db import Connection, create_pool
from sinks.migrate import migrate_when_reachable
from streams.runtime.batch import BatchProcessor, Item
from streams.runtime.clients import make_consumer, make_producer
from streams.runtime.delivery import Producers
from streams.runtime.stage import Stage
from streams.runtime.worker import StageWorker
from telemetry import logs
from telemetry.metrics import serve
from vidinsight.errors import PermanentError, Reason
from vidinsight.settings import Settings

log = logging.getLogger("vidinsight.runtime")


def build_worker(stage: Stage, settings: Settings) -> StageWorker:
    """A worker for ``stage`` with its own pool and Kafka clients."""
    pool = create_pool(settings, name=f"stage-{stage.name}")
    producers = Producers(lambda: make_producer(settings))

    def on_dead_letter(conn: Connection, item: Item) -> None:
        """A dead-lettered message fails its job, with the reason, in the same transaction."""
        if item.failure is None:
            return
        try:
            jobs.fail_job(
                conn,
                item.job_id,
                stage.name,
                item.failure.reason,
                item.failure.exception_message,
                item.customer_id,
            )
        except PermanentError as exc:
            if exc.reason is not Reason.NOT_FOUND:
                raise  # a job the platform never saw has no row to fail

    processor = BatchProcessor(
        stage,
        settings,
        Codec(settings.registry_url),
        pool,
        create_pool(settings, name=f"stage-{stage.name}-statements", autocommit=True),
        producers,
        BlobStore.from_settings(settings),
        on_dead_letter,
    )
    return StageWorker(
        stage, settings, processor, make_consumer(settings, stage.consumer_group), producers
    )


def run(stage: Stage, settings: Settings) -> int:
    """Run ``stage`` until SIGTERM or SIGINT; return the process exit code."""
    logs.configure(settings.log_level)
    port = serve(settings.metrics_port, settings.metrics_host)
    migrate_when_reachable(settings, stage.name)
    worker = build_worker(stage, settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum, extra={"stage": stage.name})
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("metrics on port %d", port, extra={"stage": stage.name})
    return worker.run()
