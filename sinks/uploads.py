"""Uploads: their rows, the per-customer quotas they count against, and their charges.

An upload's row exists from the moment its body starts to arrive: until it completes,
its ``bytes`` are the quota it has reserved, so concurrent uploads of one customer
never together pass the quota. Every change that adds to a customer's reservations
(``begin_upload``, ``reserve_more``) happens under a transaction-scoped advisory lock on
that customer and re-counts the customer's rows after taking it, which is what makes
the check and the reservation one atomic step. The other changes only shrink or drop a
reservation (``complete_upload`` sets the real size, never more than what was reserved
as the body arrived; ``discard_upload`` and ``delete_upload`` remove the row), so they
need no lock: a check running meanwhile counts the larger, older figure and errs on the
side of refusing, never of letting a customer past the quota.

The API only ever sees completed uploads. ``get_upload`` locks the row it returns (FOR
SHARE) for the caller's transaction, so a job that names an upload is committed before
a DELETE or the sweeper may look for the jobs reading it, or not at all.

An upload still arriving after ``VI_UPLOAD_RECEIVING_TIMEOUT_SECONDS`` is taken to be
cut off (its gateway died) and is released by the sweep like an expired one.

Storage charges are an outbox: written in the transaction that bills or deletes the
upload, produced to the costs topic later (``gateway.upload_storage``) and stamped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from sinks.db import Connection
from vidinsight.errors import PermanentError, Reason
from vidinsight.settings import Settings

SWEEP_LOCK_KEY = 0x7669757073776570  # any fixed bigint: spells "viupswep"

# When an upload expires (null: never while a queued or running job of its customer
# reads it): the TTL after it was stored, or after the last job that read it finished.
_EXPIRES_AT = """
CASE WHEN EXISTS (
  SELECT 1 FROM jobs j WHERE j.source_uri = u.blob_uri AND j.customer_id = u.customer_id
    AND j.status IN ('queued', 'running'))
THEN NULL
ELSE greatest(
  coalesce(u.completed_at, u.created_at),
  (SELECT max(coalesce(j.completed_at, j.updated_at)) FROM jobs j
   WHERE j.source_uri = u.blob_uri AND j.customer_id = u.customer_id)
) + %(ttl)s::interval
END
"""


@dataclass(frozen=True)
class UploadQuota:
    """What one customer may hold at once: uploads and bytes (arriving ones included)."""

    max_count: int
    max_bytes: int


@dataclass(frozen=True)
class UploadUsage:
    count: int
    bytes: int


@contextmanager
def sweep_lock(conn: Connection) -> Iterator[bool]:
    """Hold the platform-wide sweep lock (session-scoped, so it outlives the pass's own
    transactions) while the block runs; yields False at once if another sweeper has it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SWEEP_LOCK_KEY,)).fetchone()
    conn.commit()
    if row is None or not row["ok"]:
        yield False
        return
    try:
        yield True
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK_KEY,))
        conn.commit()


def upload_quota(conn: Connection, customer_id: str, settings: Settings) -> UploadQuota:
    """The customer's own quotas where set, the settings' defaults otherwise."""
    row = conn.execute(
        "SELECT coalesce(max_count, %s) AS max_count, coalesce(max_bytes, %s) AS max_bytes"
        " FROM (SELECT 1) one LEFT JOIN upload_quotas ON customer_id = %s",
        (
            settings.upload_max_count_per_customer,
            settings.upload_max_bytes_per_customer,
            customer_id,
        ),
    ).fetchone()
    assert row is not None
    return UploadQuota(max_count=int(row["max_count"]), max_bytes=int(row["max_bytes"]))


def set_upload_quota(
    conn: Connection, customer_id: str, max_count: int | None, max_bytes: int | None
) -> bool:
    """Set (None: back to the default) a customer's quotas; False if no such customer.

    Lowering a quota below what the customer holds deletes nothing: new uploads are
    refused until deletions and expiry bring the customer under it.
    """
    row = conn.execute(
        "INSERT INTO upload_quotas (customer_id, max_count, max_bytes)"
        " SELECT customer_id, %s, %s FROM customers WHERE customer_id = %s"
        " ON CONFLICT (customer_id) DO UPDATE SET max_count = EXCLUDED.max_count,"
        " max_bytes = EXCLUDED.max_bytes, updated_at = now() RETURNING customer_id",
        (max_count, max_bytes, customer_id),
    ).fetchone()
    return row is not None


def upload_usage(conn: Connection, customer_id: str) -> UploadUsage:
    """What the customer holds: completed uploads plus the reservations of arriving ones."""
    row = conn.execute(
        "SELECT count(*) AS n, coalesce(sum(bytes), 0)::bigint AS total FROM uploads"
        " WHERE customer_id = %s",
        (customer_id,),
    ).fetchone()
    assert row is not None
    return UploadUsage(count=int(row["n"]), bytes=int(row["total"]))


def _locked_usage(conn: Connection, customer_id: str) -> UploadUsage:
    """Serialise the customer's reservations until commit, then count what they hold."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"uploads:{customer_id}",)
    )
    return upload_usage(conn, customer_id)


def _over_quota(message: str) -> PermanentError:
    return PermanentError(
        Reason.UPLOAD_QUOTA_EXCEEDED,
        f"upload quota exceeded: {message}; delete uploads (DELETE /v1/uploads/{{upload_id}})"
        " or ask for a larger quota",
    )


def _check_bytes(quota: UploadQuota, usage: UploadUsage, more: int) -> None:
    if usage.bytes + more > quota.max_bytes:
        raise _over_quota(
            f"at most {quota.max_bytes} bytes of uploads at once; {usage.bytes} are held or"
            f" arriving and this upload needs {more} more"
        )


def begin_upload(
    conn: Connection,
    upload_id: str,
    customer_id: str,
    blob_uri: str,
    reserve_bytes: int,
    quota: UploadQuota,
) -> None:
    """Reserve one upload and ``reserve_bytes`` of the quota, or raise upload_quota_exceeded."""
    usage = _locked_usage(conn, customer_id)
    if usage.count + 1 > quota.max_count:
        raise _over_quota(
            f"at most {quota.max_count} uploads at once; {usage.count} are held or arriving"
        )
    _check_bytes(quota, usage, reserve_bytes)
    conn.execute(
        "INSERT INTO uploads (upload_id, customer_id, blob_uri, bytes) VALUES (%s, %s, %s, %s)",
        (upload_id, customer_id, blob_uri, reserve_bytes),
    )


def reserve_more(
    conn: Connection,
    upload_id: str,
    customer_id: str,
    at_least: int,
    step: int,
    quota: UploadQuota,
) -> int:
    """Grow an arriving upload's reservation to ``at_least`` bytes (a step more if the
    quota has room); return the new reservation, or raise upload_quota_exceeded."""
    usage = _locked_usage(conn, customer_id)
    row = conn.execute(
        "SELECT bytes FROM uploads WHERE upload_id = %s AND customer_id = %s"
        " AND completed_at IS NULL",
        (upload_id, customer_id),
    ).fetchone()
    if row is None:
        raise PermanentError(Reason.CONFLICT, f"upload {upload_id} is no longer arriving")
    held = int(row["bytes"])
    _check_bytes(quota, usage, at_least - held)
    reserved = min(max(at_least, held + step), held + quota.max_bytes - usage.bytes)
    conn.execute("UPDATE uploads SET bytes = %s WHERE upload_id = %s", (reserved, upload_id))
    return reserved


def complete_upload(
    conn: Connection, upload_id: str, customer_id: str, size: int, sha256: str
) -> None:
    """The upload arrived whole: its real size replaces its reservation; billing starts."""
    row = conn.execute(
        "UPDATE uploads SET bytes = %s, sha256 = %s, completed_at = now(), billed_until = now()"
        " WHERE upload_id = %s AND customer_id = %s AND completed_at IS NULL"
        " RETURNING upload_id",
        (size, sha256, upload_id, customer_id),
    ).fetchone()
    if row is None:  # the sweeper took an upload that arrived for longer than the TTL
        raise PermanentError(Reason.CONFLICT, f"upload {upload_id} is no longer arriving")


def discard_upload(conn: Connection, upload_id: str, customer_id: str) -> None:
    """An upload that failed on its way in gives its reservation back."""
    conn.execute(
        "DELETE FROM uploads WHERE upload_id = %s AND customer_id = %s AND completed_at IS NULL",
        (upload_id, customer_id),
    )


def get_upload(conn: Connection, upload_id: str, customer_id: str) -> dict[str, Any] | None:
    """A completed upload, only for the customer who made it (I6), locked FOR SHARE until
    the caller's transaction ends so that it cannot be deleted meanwhile."""
    return conn.execute(
        "SELECT * FROM uploads WHERE upload_id = %s AND customer_id = %s"
        " AND completed_at IS NOT NULL FOR SHARE",
        (upload_id, customer_id),
    ).fetchone()


def lock_upload(conn: Connection, upload_id: str, customer_id: str) -> dict[str, Any] | None:
    """An upload (arriving or completed) of the customer, locked FOR UPDATE, or None."""
    return conn.execute(
        "SELECT * FROM uploads WHERE upload_id = %s AND customer_id = %s FOR UPDATE",
        (upload_id, customer_id),
    ).fetchone()


def list_uploads(conn: Connection, customer_id: str, ttl: timedelta) -> list[dict[str, Any]]:
    """The customer's completed uploads, newest first, each with when it expires."""
    return conn.execute(
        f"SELECT u.upload_id, u.bytes, u.sha256, u.completed_at, {_EXPIRES_AT} AS expires_at"
        " FROM uploads u WHERE u.customer_id = %(customer)s AND u.completed_at IS NOT NULL"
        " ORDER BY u.completed_at DESC, u.upload_id DESC",
        {"customer": customer_id, "ttl": ttl},
    ).fetchall()


def in_use(conn: Connection, upload: Mapping[str, Any]) -> bool:
    """Whether a queued or running job of the upload's customer reads it."""
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE source_uri = %s AND customer_id = %s"
        " AND status IN ('queued', 'running') LIMIT 1",
        (upload["blob_uri"], upload["customer_id"]),
    ).fetchone()
    return row is not None


# Whether an upload is due for removal: one still arriving past the receiving timeout,
# or a completed one past its expiry (``created_at`` first, which the index answers:
# no upload expires sooner than its TTL after it was created).
_DUE = f"""
(u.completed_at IS NULL AND u.created_at <= %(now)s - %(receiving)s::interval)
OR (u.completed_at IS NOT NULL AND u.created_at <= %(now)s - %(ttl)s::interval
    AND {_EXPIRES_AT} <= %(now)s)
"""


def expired_uploads(
    conn: Connection, ttl: timedelta, receiving: timedelta, now: datetime
) -> list[dict[str, Any]]:
    """Uploads due for removal as of ``now`` (see ``_DUE``), oldest first."""
    return conn.execute(
        f"SELECT u.upload_id, u.customer_id FROM uploads u WHERE {_DUE}"
        " ORDER BY u.created_at, u.upload_id",
        {"now": now, "ttl": ttl, "receiving": receiving},
    ).fetchall()


def is_expired(
    conn: Connection, upload_id: str, ttl: timedelta, receiving: timedelta, now: datetime
) -> bool:
    """Whether the upload is still due for removal as of this statement (a job may have
    named it since it was listed)."""
    row = conn.execute(
        f"SELECT coalesce({_DUE}, false) AS due FROM uploads u WHERE u.upload_id = %(id)s",
        {"id": upload_id, "now": now, "ttl": ttl, "receiving": receiving},
    ).fetchone()
    return row is not None and bool(row["due"])


def uploads_to_bill(conn: Connection, before: datetime) -> list[dict[str, Any]]:
    """Completed uploads whose storage is unbilled since ``before`` or earlier."""
    return conn.execute(
        "SELECT upload_id, customer_id FROM uploads"
        " WHERE completed_at IS NOT NULL AND billed_until <= %s",
        (before,),
    ).fetchall()


def delete_upload(conn: Connection, upload_id: str) -> None:
    conn.execute("DELETE FROM uploads WHERE upload_id = %s", (upload_id,))


def set_billed_until(conn: Connection, upload_id: str, until: datetime) -> None:
    conn.execute("UPDATE uploads SET billed_until = %s WHERE upload_id = %s", (until, upload_id))


def record_charge(conn: Connection, upload_id: str, record: Mapping[str, Any]) -> None:
    """Write a storage CostEvent to the outbox (once: its event id is its key)."""
    conn.execute(
        "INSERT INTO upload_charges (event_id, customer_id, upload_id, record)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
        (record["event_id"], record["customer_id"], upload_id, Jsonb(dict(record))),
    )


def unpublished_charges(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The oldest charges not yet acknowledged by the costs topic."""
    rows = conn.execute(
        "SELECT record FROM upload_charges WHERE published_at IS NULL"
        " ORDER BY created_at, event_id LIMIT %s",
        (limit,),
    ).fetchall()
    return [row["record"] for row in rows]


def count_unpublished_charges(conn: Connection) -> int:
    """How many charges the costs topic has not acknowledged yet."""
    row = conn.execute(
        "SELECT count(*) AS n FROM upload_charges WHERE published_at IS NULL"
    ).fetchone()
    return 0 if row is None else int(row["n"])


def mark_charges_published(conn: Connection, event_ids: Iterable[str]) -> None:
    conn.execute(
        "UPDATE upload_charges SET published_at = now() WHERE event_id = ANY(%s)",
        (list(event_ids),),
    )
