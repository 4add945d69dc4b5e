"""Uploads: the media file, as the raw request body or a multipart ``file`` field;
the caller's uploads listed; an upload deleted.

The file is written to the blob store chunk by chunk while its SHA-256 is computed,
never held whole in memory; a file over the size cap is cut off, its partial blob
removed, and answered with 413. The blob goes to the platform's blob store (``sinks.blobs``: ``file://``
under the state dir by default), so the ingest stage recognises it as its own.

Every upload counts against its customer's quotas (``sinks.uploads``): a declared
Content-Length is reserved before the body is read, a body of unknown length reserves
more as it arrives, and an upload that would pass a quota is refused 413
``upload_quota_exceeded`` (before a byte is read when it can be told, else cut off).
413, not 429: waiting frees nothing (uploads leave only when deleted or expired), so a
client must not retry the same upload as it would after a rate limit. A failed upload
gives its reservation back.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, BinaryIO

import anyio
from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from gateway import metrics
from gateway.api_errors import ApiError, responses
from gateway.auth import CustomerId
from gateway.context import Context, GatewayContext
from gateway.multipart_file import FileFieldReader
from gateway.upload_storage import remove_upload, ttl, upload_key
from inference.pricing import configured_pricing_file, load_pricing
from sinks import uploads
from sinks.blobs import BlobStore
from sinks.db import transaction
from vidinsight.errors import Reason

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

MULTIPART = "multipart/form-data"
ACCEPTED_TYPES = ("video/", "audio/", "application/octet-stream", MULTIPART)

# The ``{upload_id}`` path parameter.
UploadId = Annotated[
    str, Path(min_length=1, max_length=100, pattern=r"^[!-~]+$", description="The upload's id")
]


class UploadCreated(BaseModel):
    upload_id: str
    bytes: int
    sha256: str


class UploadView(BaseModel):
    upload_id: str
    bytes: int
    sha256: str
    created_at: datetime
    # None while a queued or running job reads the upload.
    expires_at: datetime | None


class QuotaView(BaseModel):
    max_count: int
    max_bytes: int
    # Held now, uploads still arriving included.
    count: int
    bytes: int


class UploadList(BaseModel):
    uploads: list[UploadView]
    quota: QuotaView


_BODY = {
    "required": True,
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in ("video/mp4", "video/*", "audio/*", "application/octet-stream")
    }
    | {
        MULTIPART: {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        }
    },
}


@router.post(
    "",
    status_code=201,
    response_model=UploadCreated,
    responses=responses(401, 413, 415, 422, 503),
    openapi_extra={"requestBody": _BODY},
)
async def upload_media(
    request: Request,
    customer_id: CustomerId,
    ctx: Context,
) -> UploadCreated:
    """Store the media file as a blob; 201 with its id, size and SHA-256.

    The file is the raw body (a media content type) or the ``file`` field of a
    multipart form. 413 ``too_large`` over the per-upload cap, 413
    ``upload_quota_exceeded`` over the customer's upload count or byte quota.
    """
    content_type = request.headers.get("content-type", "")
    multipart = _check_content_type(content_type)
    limit = ctx.settings.gateway_max_upload_bytes
    declared = request.headers.get("content-length", "")
    # A multipart body's length also counts the form around the file: reserve as it comes.
    reserve = int(declared) if not multipart and declared.isdigit() else 0
    if reserve > limit:
        raise _too_large(limit)
    upload_id = f"upl_{uuid.uuid4().hex}"
    key = upload_key(customer_id, upload_id)
    reservation = _Reservation(ctx, upload_id, customer_id, reserve)
    await run_in_threadpool(reservation.begin, ctx.blobs.uri(key))
    try:
        size, digest = await _stream_to_blob(
            request, ctx.blobs, key, limit, content_type if multipart else None, reservation
        )
        await run_in_threadpool(reservation.complete, size, digest)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(reservation.abandon)
        raise
    metrics.UPLOADED_BYTES.inc(size)
    return UploadCreated(upload_id=upload_id, bytes=size, sha256=digest)


@router.get("", response_model=UploadList, responses=responses(401, 503))
def list_my_uploads(customer_id: CustomerId, ctx: Context) -> UploadList:
    """The caller's uploads, newest first, each with when it expires, and the quota."""
    with transaction(ctx.pool) as conn:
        rows = uploads.list_uploads(conn, customer_id, ttl(ctx.settings))
        quota = uploads.upload_quota(conn, customer_id, ctx.settings)
        usage = uploads.upload_usage(conn, customer_id)
    return UploadList(
        uploads=[
            UploadView(
                upload_id=row["upload_id"],
                bytes=row["bytes"],
                sha256=row["sha256"],
                created_at=row["completed_at"],
                expires_at=row["expires_at"],
            )
            for row in rows
        ],
        quota=QuotaView(
            max_count=quota.max_count,
            max_bytes=quota.max_bytes,
            count=usage.count,
            bytes=usage.bytes,
        ),
    )


@router.delete("/{upload_id}", status_code=204, responses=responses(401, 404, 409, 503))
def delete_my_upload(upload_id: UploadId, customer_id: CustomerId, ctx: Context) -> Response:
    """Delete the upload's blob and row (storage is billed up to now); 404 for another
    customer's upload, 409 ``upload_in_use`` while a queued or running job reads it."""
    prices = load_pricing(configured_pricing_file(ctx.settings))
    with transaction(ctx.pool) as conn:
        upload = uploads.lock_upload(conn, upload_id, customer_id)
        if upload is None or upload["completed_at"] is None:
            raise ApiError(Reason.NOT_FOUND, f"no upload {upload_id}")
        if uploads.in_use(conn, upload):
            raise ApiError(
                Reason.UPLOAD_IN_USE,
                f"upload {upload_id} is the media of a queued or running job;"
                " cancel the job or wait for it to finish",
            )
        remove_upload(conn, ctx.blobs, upload, prices, datetime.now(UTC))
    return Response(status_code=204)


def _check_content_type(content_type: str) -> bool:
    """415 unless the body is media or a multipart form; True for a multipart form."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not media.startswith(ACCEPTED_TYPES):
        raise ApiError(
            Reason.INVALID_REQUEST,
            "send the media file as the body with a video/*, audio/* or"
            " application/octet-stream content type, or as the 'file' field of a"
            " multipart/form-data form",
            status=415,
        )
    return media == MULTIPART


def _too_large(limit: int) -> ApiError:
    return ApiError(Reason.TOO_LARGE, f"uploads are limited to {limit} bytes")


class _Reservation:
    """The quota one arriving upload holds: its row, whose bytes grow with the body."""

    def __init__(
        self, ctx: GatewayContext, upload_id: str, customer_id: str, reserved: int
    ) -> None:
        self._ctx = ctx
        self._upload_id = upload_id
        self._customer_id = customer_id
        self._uri = ""
        self.reserved = reserved

    def begin(self, uri: str) -> None:
        """Take one upload and the declared bytes of the quota (413 if they do not fit)."""
        self._uri = uri
        with transaction(self._ctx.pool) as conn:
            quota = uploads.upload_quota(conn, self._customer_id, self._ctx.settings)
            uploads.begin_upload(
                conn, self._upload_id, self._customer_id, uri, self.reserved, quota
            )

    async def cover(self, size: int) -> None:
        """Make the reservation hold ``size`` bytes (413 once the quota cannot)."""
        if size > self.reserved:
            self.reserved = await run_in_threadpool(self._grow, size)

    def _grow(self, size: int) -> int:
        with transaction(self._ctx.pool) as conn:
            quota = uploads.upload_quota(conn, self._customer_id, self._ctx.settings)
            return uploads.reserve_more(
                conn,
                self._upload_id,
                self._customer_id,
                size,
                self._ctx.settings.upload_quota_step_bytes,
                quota,
            )

    def complete(self, size: int, digest: str) -> None:
        with transaction(self._ctx.pool) as conn:
            uploads.complete_upload(conn, self._upload_id, self._customer_id, size, digest)

    def abandon(self) -> None:
        """Give the reservation back and remove any blob the failed upload left."""
        with transaction(self._ctx.pool) as conn:
            uploads.discard_upload(conn, self._upload_id, self._customer_id)
        if self._uri:
            self._ctx.blobs.delete(self._uri)


class _BlobWriter:
    """Counts, hashes and writes the file's bytes; 413 as soon as they pass the cap."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self._out = out
        self._limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise _too_large(self._limit)
        self.digest.update(data)
        self._out.write(data)


async def _stream_to_blob(
    request: Request,
    blobs: BlobStore,
    key: str,
    limit: int,
    multipart_type: str | None,
    reservation: _Reservation,
) -> tuple[int, str]:
    """Write the file to the blob ``key``; return (bytes, sha256 hex). The file is the
    raw body, or, given the form's ``multipart_type`` (boundary included), its file field.

    The blob store makes the blob appear only once complete and removes the partial
    one when this raises (over the cap or the quota, empty, malformed, or the client
    went away).
    """
    with blobs.open_write(key) as out:
        writer = _BlobWriter(out, limit)
        form = None if multipart_type is None else FileFieldReader(multipart_type, writer.write)
        async for chunk in request.stream():
            if form is None:
                writer.write(chunk)
            else:
                form.feed(chunk)
            await reservation.cover(writer.size)
        if form is not None:
            form.finish()
        if writer.size == 0:
            raise ApiError(Reason.EMPTY_MEDIA, "the upload is empty", status=422)
    return writer.size, writer.digest.hexdigest()
