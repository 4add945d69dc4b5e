"""Publishing job requests from the jobs table (the outbox) to Kafka.

A submission commits its job row first and only then produces ``JobRequested``; if
the process dies in between, or the broker is down, the row stays unpublished and the
relay (a thread in every gateway process) produces it later. A job is therefore
published at least once; a duplicate is harmless because the pipeline is idempotent
on job_id.

The request path does not wait for the broker: the row is already durable, so the
202 goes out once it is committed and the produce is queued. Acknowledged job ids are
stamped ``published_at`` in batches by a marker thread, one UPDATE for many jobs.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from gateway.periodic import Periodic
from schemas.codec import Codec
from sinks.db import Pool, transaction
from sinks.jobs import mark_many_published, mark_published, unpublished
from streams.runtime.delivery import delivery_error
from telemetry.logs import LIBRDKAFKA_LOGGER, intake_fields
from vidinsight.errors import Reason, VidinsightError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

# The failpoint a fault test arms (VI_FAILPOINTS) to kill the gateway between the
# committed insert and the produce, exactly as an OOM kill would.
AFTER_INSERT_FAILPOINT = "gateway_after_insert"
# The marker stamps up to this many acknowledged jobs per UPDATE, waking this often.
MARK_BATCH_MAX = 500
MARK_WAIT_SECONDS = 0.1


def hit_after_insert_failpoint(settings: Settings) -> None:
    """SIGKILL this process if the after-insert failpoint is armed."""
    armed = {name.strip() for name in settings.failpoints.split(",")}
    if AFTER_INSERT_FAILPOINT in armed:
        os.kill(os.getpid(), signal.SIGKILL)


def job_requested(job: Mapping[str, Any]) -> dict[str, Any]:
    """The JobRequested record for a jobs-table row."""
    return {
        "job_id": job["job_id"],
        "customer_id": job["customer_id"],
        "source_uri": job["source_uri"],
        "webhook_url": job["webhook_url"],
        "options": {str(k): str(v) for k, v in (job["options"] or {}).items()},
        "requested_at_ms": int(job["created_at"].timestamp() * 1000),
    }


class Publisher:
    """An idempotent producer (acks=all) whose delivery reports a thread keeps serving."""

    def __init__(self, settings: Settings, codec: Codec, topic: str, pool: Pool) -> None:
        self._pool = pool
        self._acked: queue.Queue[str] = queue.Queue()
        self._codec = codec
        self._topic = topic
        self._timeout = settings.gateway_produce_timeout_seconds
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": settings.producer_linger_ms,
                "client.id": "vidinsight-gateway",
                "logger": LIBRDKAFKA_LOGGER,
            }
        )
        self._stopping = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_reports, name="producer-poll", daemon=True
        )
        self._poller.start()
        self._marker = threading.Thread(target=self._mark_acked, name="outbox-marker", daemon=True)
        self._marker.start()

    def _serve_reports(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    def publish_later(self, job: Mapping[str, Any]) -> None:
        """Queue the job's request for Kafka; once acknowledged, its row is marked published.

        Nothing here can lose the job: whatever fails (encoding, a full queue, a broker
        that never acknowledges), the row stays unpublished and the relay takes it.
        """
        job_id, customer_id = str(job["job_id"]), str(job["customer_id"])
        try:
            value = self._codec.encode(self._topic, "JobRequested", job_requested(job))
        except VidinsightError as exc:
            log.warning(
                "job request not encoded",
                extra={**intake_fields(job_id, customer_id), "reason": exc.reason.value},
            )
            return

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            err = delivery_error(err, msg)
            if err is None:
                self._acked.put(job_id)
            else:
                log.warning(
                    "job request not acknowledged",
                    extra={**intake_fields(job_id, customer_id), **_unacknowledged(err.str())},
                )

        try:
            self._producer.produce(self._topic, key=job_id, value=value, on_delivery=on_delivery)
        except BufferError:
            log.warning(
                "producer queue full; the relay will publish",
                extra={**intake_fields(job_id, customer_id), **_unacknowledged("queue full")},
            )

    def _mark_acked(self) -> None:
        """Stamp acknowledged jobs as published, many per transaction, until closed."""
        while not (self._stopping.is_set() and self._acked.empty()):
            try:
                batch = [self._acked.get(timeout=MARK_WAIT_SECONDS)]
            except queue.Empty:
                continue
            while len(batch) < MARK_BATCH_MAX:
                try:
                    batch.append(self._acked.get_nowait())
                except queue.Empty:
                    break
            try:
                with transaction(self._pool) as conn:
                    mark_many_published(conn, batch)
            except Exception:  # the relay republishes them later; duplicates are harmless
                log.exception("could not mark published", extra={"detail": f"{len(batch)} jobs"})

    def publish(self, job: Mapping[str, Any]) -> bool:
        """Produce the job's request and wait for the ack; False if it did not land in time."""
        try:
            value = self._codec.encode(self._topic, "JobRequested", job_requested(job))
        except VidinsightError as exc:
            log.warning(
                "job request not encoded",
                extra={**_fields(job), "reason": exc.reason.value},
            )
            return False
        done = threading.Event()
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            err = delivery_error(err, msg)
            if err is not None:
                failures.append(err.str())
            done.set()

        try:
            self._producer.produce(
                self._topic, key=job["job_id"], value=value, on_delivery=on_delivery
            )
        except BufferError:
            return False  # local queue full: the relay publishes it later
        if not done.wait(self._timeout) or failures:
            log.warning(
                "job request not acknowledged",
                extra={**_fields(job), **_unacknowledged("; ".join(failures))},
            )
            return False
        return True

    def close(self) -> None:
        """Deliver what is queued, mark it, and stop both threads."""
        self._producer.flush(self._timeout)
        self._stopping.set()
        self._poller.join()
        self._marker.join()


class Relay:
    """Re-publishes outbox rows a crash or a broker outage left unpublished."""

    def __init__(self, settings: Settings, pool: Pool, publisher: Publisher) -> None:
        self._pool = pool
        self._publisher = publisher
        self._interval = settings.gateway_relay_interval_seconds
        self._min_age = timedelta(seconds=settings.gateway_relay_min_age_seconds)
        self._periodic = Periodic(
            "outbox-relay", self._interval, self.relay_once, first_after=self._interval
        )

    def start(self) -> None:
        if self._interval > 0:
            self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def relay_once(self) -> int:
        """Publish one batch of old unpublished rows; return how many were published."""
        published = 0
        with transaction(self._pool) as conn:
            for job in unpublished(conn, older_than=self._min_age):
                if not self._publisher.publish(job):
                    break  # the broker is not taking messages; try again next pass
                mark_published(conn, job["job_id"])
                published += 1
                log.info(
                    "outbox relay published job",
                    extra=_fields(job),
                )
        return published


def _fields(job: Mapping[str, Any]) -> dict[str, Any]:
    return intake_fields(str(job["job_id"]), str(job["customer_id"]))


def _unacknowledged(detail: str) -> dict[str, str]:
    """Why a request is left to the relay: the broker did not take it (yet)."""
    return {"reason": Reason.BROKER_UNAVAILABLE.value, "detail": detail}
