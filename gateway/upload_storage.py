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
idempotent: each upload is re-examined under its row lock before it is touched.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from inference.pricing import DEFAULT_PRICING_FILE, PriceBook, load_pricing
from schemas.codec import Codec
from sinks import uploads
from sinks.blobs import BlobStore
from sinks.db import Connection, Pool, transaction, translate_errors
from streams.runtime.clients import make_producer
from topics.catalogue import COSTS_TOPIC
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

HOURS_PER_MONTH = 730  # the price book's storage_bytes price is per byte and month
STAGE = "uploads"  # the stage storage charges are reported under (ledger, /v1/usage)
PROVIDER, MODEL, UNIT = "storage", "blob", "storage_bytes"
SWEEP_LOCK_KEY = 0x7669757073776570  # any fixed bigint: spells "viupswep"
PUBLISH_BATCH = 1000


@dataclass(frozen=True)
class SweepReport:
    """What one pass did; ``skipped`` when another sweeper held the lock."""

    expired: int = 0
    billed: int = 0
    published: int = 0
    skipped: bool = False


def ttl(settings: Settings) -> timedelta:
    return timedelta(hours=settings.upload_ttl_hours)


def price_book(settings: Settings) -> PriceBook:
    """The price book these settings name (``VI_PRICING_FILE``, else the shipped one)."""
    return load_pricing(Path(settings.pricing_file or DEFAULT_PRICING_FILE))


def storage_charge(
    upload: Mapping[str, Any], start: datetime, end: datetime, prices: PriceBook
) -> dict[str, Any]:
    """The CostEvent for holding the upload's bytes from ``start`` to ``end``.

    Its id is fixed by the upload and the period, so the same charge is the same event.
    """
    byte_months = int(upload["bytes"]) * (end - start).total_seconds() / 3600 / HOURS_PER_MONTH
    period = f"{upload['upload_id']}:{start.isoformat()}:{end.isoformat()}"
    return {
        "event_id": hashlib.sha256(f"upload-storage:{period}".encode()).hexdigest(),
        "customer_id": upload["customer_id"],
        "job_id": upload["upload_id"],
        "stage": STAGE,
        "provider": PROVIDER,
        "model": MODEL,
        "unit": UNIT,
        "quantity": byte_months,
        "input_tokens": 0,
        "cached_tokens": 0,
        "output_tokens": 0,
        "amount_usd_micros": prices.cost_usd_micros(PROVIDER, MODEL, {UNIT: byte_months}),
        "occurred_at_ms": int(end.timestamp() * 1000),
    }


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
) -> SweepReport:
    """One pass: expire, bill the long-held, produce the charges; skipped if another runs."""
    now = now or datetime.now(UTC)
    with translate_errors(), pool.connection() as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SWEEP_LOCK_KEY,))
        got = bool((locked.fetchone() or {}).get("ok"))
        conn.commit()
        if not got:
            return SweepReport(skipped=True)
        try:
            prices = price_book(settings)
            report = SweepReport(
                expired=_expire(settings, pool, blobs, prices, now),
                billed=_bill(settings, pool, prices, now),
                published=publish_charges(settings, pool, producer, codec),
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK_KEY,))
            conn.commit()
    log.info("upload sweep done", extra={"detail": str(report)})
    return report


def _expire(
    settings: Settings, pool: Pool, blobs: BlobStore, prices: PriceBook, now: datetime
) -> int:
    """Delete every upload past its expiry; each re-examined under its lock (a job may
    have named it since it was listed)."""
    with transaction(pool) as conn:
        candidates = uploads.expired_uploads(conn, ttl(settings), now)
    expired = 0
    for candidate in candidates:
        with transaction(pool) as conn:
            upload = uploads.lock_upload(conn, candidate["upload_id"], candidate["customer_id"])
            if upload is None:
                continue
            until = uploads.expires_at(conn, upload["upload_id"], ttl(settings))
            if until is None or until > now:
                continue
            remove_upload(conn, blobs, upload, prices, now)
            expired += 1
            log.info(
                "upload expired",
                extra={"customer_id": upload["customer_id"], "detail": upload["upload_id"]},
            )
    return expired


def _bill(settings: Settings, pool: Pool, prices: PriceBook, now: datetime) -> int:
    """Charge each upload held a billing period or more since last billed, in whole periods."""
    period = timedelta(hours=settings.upload_billing_period_hours)
    with transaction(pool) as conn:
        candidates = uploads.uploads_to_bill(conn, now - period)
    billed = 0
    for candidate in candidates:
        with transaction(pool) as conn:
            upload = uploads.lock_upload(conn, candidate["upload_id"], candidate["customer_id"])
            if upload is None or upload["billed_until"] > now - period:
                continue
            start = upload["billed_until"]
            end = start + period * ((now - start) // period)
            uploads.record_charge(
                conn, upload["upload_id"], storage_charge(upload, start, end, prices)
            )
            uploads.set_billed_until(conn, upload["upload_id"], end)
            billed += 1
    return billed


def costs_topic(settings: Settings) -> str:
    """Where cost events go: the aggregator's input topic."""
    return settings.costs_input_topic or COSTS_TOPIC


def publish_charges(settings: Settings, pool: Pool, producer: Producer, codec: Codec) -> int:
    """Produce the outbox's charges until it is empty or the broker stops acknowledging;
    return how many were acknowledged (and stamped)."""
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
        if len(acked) < PUBLISH_BATCH:
            return published


def _produce(
    producer: Producer, codec: Codec, topic: str, records: list[dict[str, Any]], timeout: float
) -> list[str]:
    """Produce the records keyed by customer; the event ids the broker acknowledged."""
    acked: list[str] = []

    def on_delivery(event_id: str, err: KafkaError | None, _msg: Message) -> None:
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
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        producer = make_producer(self._settings)
        codec = Codec(self._settings.registry_url)
        while not self._stopping.wait(self._settings.upload_sweep_interval_seconds):
            try:
                sweep(self._settings, self._pool, self._blobs, producer, codec)
            except Exception:
                log.exception("upload sweep failed; retrying next interval")
        producer.flush(self._settings.producer_flush_timeout_seconds)
