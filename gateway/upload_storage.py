"""Uploads' storage over time: expiry, storage billing, and the sweeper that runs both.

An upload is the job's media (ingest hashes it in place and passes its URI on), so it
is kept while a queued or running job reads it, and expires ``VI_UPLOAD_TTL_HOURS``
after it was stored or after the last job that read it finished. Expiring or deleting
an upload charges the storage it held since it was last billed; an upload held longer
is charged once per ``VI_UPLOAD_BILLING_PERIOD_HOURS`` in fixed periods. Each charge is
a CostEvent at the ``storage``/``blob`` price of the price book (per byte-month), written
to the ``upload_charges`` outbox in the same transaction as the deletion or the billing
mark, and produced to the costs topic afterwards: a crash between the two is caught up
by the next pass, and the event id makes the ledger count a charge once.

The sweeper runs in every gateway (a thread), one at a time across the platform under a
PostgreSQL advisory lock, and on demand as ``vidinsight uploads expire``. Every pass is
idempotent: each upload is re-examined under its row lock before it is touched. An
upload that cannot be removed or billed (its blob outside the current store, a storage
error) is logged with the reason, counted as ``failed`` and left for the next pass; it
never stops the others, the billing or the publishing. An upload still arriving after
``VI_UPLOAD_RECEIVING_TIMEOUT_SECONDS`` (its gateway died) is released like an expired
one, and its partial file is removed once nothing has written to it for that long.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from inference.pricing import PriceBook, configured_pricing_file, load_pricing
from schemas.codec import Codec
from sinks import uploads
from sinks.blobs import BlobStore
from sinks.db import Connection, Pool, transaction, translate_errors
from streams.costs.events import CostEvent, costs_topic, priced_cost_event
from streams.runtime.clients import make_producer
from streams.runtime.delivery import delivery_error
from vidinsight.errors import VidinsightError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

HOURS_PER_MONTH = 730  # the price book's storage_bytes price is per byte and month
STAGE = "uploads"  # the stage storage charges are reported under (ledger, /v1/usage)
PROVIDER, MODEL, UNIT = "storage", "blob", "storage_bytes"
PUBLISH_BATCH = 1000
UPLOADS_PREFIX = "uploads"  # every upload's blob key starts with it
# stop() waits this long beyond the producer's flush timeouts (a pass finishing the
# upload it is on, producing one batch, and the thread's last flush).
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class SweepReport:
    """What one pass did; ``skipped`` when another sweeper held the lock.

    ``failed``: uploads left as they were after an error (each logged with its reason);
    ``unpublished``: charges the costs topic had not acknowledged by the pass's end.
    """

    expired: int = 0
    billed: int = 0
    failed: int = 0
    published: int = 0
    unpublished: int = 0
    partials_removed: int = 0
    skipped: bool = False


def ttl(settings: Settings) -> timedelta:
    return timedelta(hours=settings.upload_ttl_hours)


def receiving_timeout(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.upload_receiving_timeout_seconds)


def upload_key(customer_id: str, upload_id: str) -> str:
    """The blob key of an upload: under its customer's folder of the uploads prefix."""
    return f"{UPLOADS_PREFIX}/{customer_id}/{upload_id}"


def storage_charge(
    upload: Mapping[str, Any], start: datetime, end: datetime, prices: PriceBook
) -> CostEvent:
    """The CostEvent for holding the upload's bytes from ``start`` to ``end``.

    Its id is fixed by the upload and the period, so the same charge is the same event.
    """
    byte_months = int(upload["bytes"]) * (end - start).total_seconds() / 3600 / HOURS_PER_MONTH
    period = f"{upload['upload_id']}:{start.isoformat()}:{end.isoformat()}"
    return priced_cost_event(
        prices,
        event_id=hashlib.sha256(f"upload-storage:{period}".encode()).hexdigest(),
        customer_id=upload["customer_id"],
        job_id=upload["upload_id"],
        stage=STAGE,
        provider=PROVIDER,
        model=MODEL,
        unit=UNIT,
        quantity=byte_months,
        occurred_at_ms=int(end.timestamp() * 1000),
    )


def remove_upload(
    conn: Connection,
    blobs: BlobStore,
    upload: Mapping[str, Any],
    prices: PriceBook,
    now: datetime,
) -> None:
    """Charge what a locked upload held since last billed, delete its row, then its blob.

    The blob goes before the commit: should the commit fail, the row remains and the
    next DELETE or sweep finishes the job, whereas the other order could leave bytes on
    disk that nothing refers to.
    """
    billed_until = upload["billed_until"]
    if upload["completed_at"] is not None and billed_until < now:
        uploads.record_charge(
            conn, upload["upload_id"], storage_charge(upload, billed_until, now, prices)
        )
    uploads.delete_upload(conn, upload["upload_id"])
    blobs.delete(upload["blob_uri"])


def sweep(
    settings: Settings,
    pool: Pool,
    blobs: BlobStore,
    producer: Producer,
    codec: Codec,
    now: datetime | None = None,
    stopping: threading.Event | None = None,
) -> SweepReport:
    """One pass: expire, bill the long-held, produce the charges, remove dead partial
    files; skipped if another sweeper runs. ``stopping`` set: stop at the next upload."""
    now = now or datetime.now(UTC)
    stopping = stopping or threading.Event()
    with translate_errors(), pool.connection() as conn, uploads.sweep_lock(conn) as got:
        if not got:
            return SweepReport(skipped=True)
        prices = load_pricing(configured_pricing_file(settings))
        expired, expire_failed = _expire(settings, pool, blobs, prices, now, stopping)
        billed, bill_failed = _bill(settings, pool, prices, now, stopping)
        published = publish_charges(settings, pool, producer, codec, stopping)
        with transaction(pool) as tx:
            unpublished = uploads.count_unpublished_charges(tx)
    report = SweepReport(
        expired=expired,
        billed=billed,
        failed=expire_failed + bill_failed,
        published=published,
        unpublished=unpublished,
        partials_removed=blobs.remove_stale_partials(
            UPLOADS_PREFIX, now - receiving_timeout(settings)
        ),
    )
    log.info("upload sweep done", extra={"detail": str(report)})
    return report


def _each_isolated(
    what: str,
    candidates: list[dict[str, Any]],
    stopping: threading.Event,
    handle: Callable[[dict[str, Any]], bool],
) -> tuple[int, int]:
    """Run ``handle`` on each candidate until asked to stop; an error is logged with its
    reason and counted, and the next candidate goes on. (done, failed)."""
    done = failed = 0
    for candidate in candidates:
        if stopping.is_set():
            break
        try:
            done += handle(candidate)
        except Exception as exc:
            failed += 1
            reason = exc.reason.value if isinstance(exc, VidinsightError) else type(exc).__name__
            log.warning(
                f"upload not {what}; retried next pass",
                extra={
                    "customer_id": candidate["customer_id"],
                    "reason": reason,
                    "detail": f"{candidate['upload_id']}: {exc}",
                },
            )
    return done, failed


def _expire(
    settings: Settings,
    pool: Pool,
    blobs: BlobStore,
    prices: PriceBook,
    now: datetime,
    stopping: threading.Event,
) -> tuple[int, int]:
    """Delete every upload due for removal, each re-examined under its lock (a job may
    have named it since it was listed); (expired, failed)."""
    lifetime, receiving = ttl(settings), receiving_timeout(settings)

    def expire(candidate: dict[str, Any]) -> bool:
        with transaction(pool) as conn:
            upload = uploads.lock_upload(conn, candidate["upload_id"], candidate["customer_id"])
            if upload is None or not uploads.is_expired(
                conn, upload["upload_id"], lifetime, receiving, now
            ):
                return False
            remove_upload(conn, blobs, upload, prices, now)
        log.info(
            "upload expired" if upload["completed_at"] else "cut-off upload released",
            extra={"customer_id": upload["customer_id"], "detail": upload["upload_id"]},
        )
        return True

    with transaction(pool) as conn:
        candidates = uploads.expired_uploads(conn, lifetime, receiving, now)
    return _each_isolated("expired", candidates, stopping, expire)


def _bill(
    settings: Settings, pool: Pool, prices: PriceBook, now: datetime, stopping: threading.Event
) -> tuple[int, int]:
    """Charge each upload held a billing period or more since last billed, in whole
    periods; (billed, failed)."""
    period = timedelta(hours=settings.upload_billing_period_hours)

    def bill(candidate: dict[str, Any]) -> bool:
        with transaction(pool) as conn:
            upload = uploads.lock_upload(conn, candidate["upload_id"], candidate["customer_id"])
            if upload is None or upload["billed_until"] > now - period:
                return False
            start = upload["billed_until"]
            end = start + period * ((now - start) // period)
            uploads.record_charge(
                conn, upload["upload_id"], storage_charge(upload, start, end, prices)
            )
            uploads.set_billed_until(conn, upload["upload_id"], end)
        return True

    with transaction(pool) as conn:
        candidates = uploads.uploads_to_bill(conn, now - period)
    return _each_isolated("billed", candidates, stopping, bill)


def publish_charges(
    settings: Settings,
    pool: Pool,
    producer: Producer,
    codec: Codec,
    stopping: threading.Event,
) -> int:
    """Produce the outbox's charges until it is empty, the broker stops acknowledging or
    the sweeper is asked to stop; return how many were acknowledged (and stamped)."""
    topic = costs_topic(settings)
    published = 0
    while True:
        with transaction(pool) as conn:
            records = uploads.unpublished_charges(conn, PUBLISH_BATCH)
        acked = _produce(producer, codec, topic, records, settings.producer_flush_timeout_seconds)
        if acked:
            with transaction(pool) as conn:
                uploads.mark_charges_published(conn, acked)
        published += len(acked)
        if len(acked) < PUBLISH_BATCH or stopping.is_set():
            return published


def _produce(
    producer: Producer, codec: Codec, topic: str, records: list[dict[str, Any]], timeout: float
) -> list[str]:
    """Produce the records keyed by customer; the event ids the broker acknowledged."""
    acked: list[str] = []

    def on_delivery(event_id: str, err: KafkaError | None, msg: Message) -> None:
        err = delivery_error(err, msg)
        if err is None:
            acked.append(event_id)
        else:
            log.warning("storage charge not acknowledged", extra={"detail": err.str()})

    for record in records:
        value = codec.encode(topic, "CostEvent", record)
        producer.produce(
            topic,
            key=record["customer_id"],
            value=value,
            on_delivery=partial(on_delivery, record["event_id"]),
        )
        producer.poll(0)
    producer.flush(timeout)
    return acked


class UploadSweeper:
    """The gateway's sweeper thread: a pass every ``VI_UPLOAD_SWEEP_INTERVAL_SECONDS``."""

    def __init__(self, settings: Settings, pool: Pool, blobs: BlobStore) -> None:
        self._settings = settings
        self._pool = pool
        self._blobs = blobs
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upload-sweeper", daemon=True)

    def start(self) -> None:
        if self._settings.upload_sweep_interval_seconds > 0:
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (a pass stops at its next upload) and wait a bounded
        time; a thread still busy is left behind (a daemon: the next pass redoes its work)."""
        self._stopping.set()
        if not self._thread.is_alive():
            return
        self._thread.join(2 * self._settings.producer_flush_timeout_seconds + STOP_GRACE_SECONDS)
        if self._thread.is_alive():
            log.warning("upload sweeper did not stop in time; left to finish on its own")

    def _run(self) -> None:
        """Sweep every interval; the producer and codec are built by the first pass that
        can (a broker or registry down at start-up is retried next interval)."""
        producer: Producer | None = None
        codec: Codec | None = None
        while not self._stopping.wait(self._settings.upload_sweep_interval_seconds):
            try:
                if producer is None or codec is None:
                    producer = make_producer(self._settings)
                    codec = Codec(self._settings.registry_url)
                sweep(
                    self._settings,
                    self._pool,
                    self._blobs,
                    producer,
                    codec,
                    stopping=self._stopping,
                )
            except Exception:
                log.exception("upload sweep failed; retrying next interval")
        if producer is not None:
            producer.flush(self._settings.producer_flush_timeout_seconds)
