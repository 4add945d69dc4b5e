"""Uploads: the media file, as the raw request body or a multipart ``file`` field.

The file is written to the blob store chunk by chunk while its SHA-256 is computed,
never held whole in memory; a file over the size cap is cut off, its partial blob
removed, and answered with 413. The blob goes to the platform's blob store (``sinks.blobs``: ``file://``
under the state dir by default), so the ingest stage recognises it as its own.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import BinaryIO

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from gateway import metrics
from gateway.api_errors import ApiError, responses
from gateway.auth import CustomerId
from gateway.context import Context, GatewayContext
from gateway.multipart_file import FileFieldReader
from sinks.blobs import BlobStore
from sinks.db import transaction
from sinks.deliveries import record_upload
from vidinsight.errors import Reason

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

MULTIPART = "multipart/form-data"
ACCEPTED_TYPES = ("video/", "audio/", "application/octet-stream", MULTIPART)


class UploadCreated(BaseModel):
    upload_id: str
    bytes: int
    sha256: str


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
    multipart form.
    """
    content_type = request.headers.get("content-type", "")
    multipart = _check_content_type(content_type)
    limit = ctx.settings.gateway_max_upload_bytes
    declared = request.headers.get("content-length", "")
    if not multipart and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    upload_id = f"upl_{uuid.uuid4().hex}"
    key = f"uploads/{customer_id}/{upload_id}"
    size, digest = await _stream_to_blob(request, ctx.blobs, key, limit, content_type)
    uri = ctx.blobs.uri(key)
    await run_in_threadpool(_record, ctx, upload_id, customer_id, uri, size, digest)
    metrics.UPLOADED_BYTES.inc(size)
    return UploadCreated(upload_id=upload_id, bytes=size, sha256=digest)


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
    request: Request, blobs: BlobStore, key: str, limit: int, content_type: str
) -> tuple[int, str]:
    """Write the file to the blob ``key``; return (bytes, sha256 hex).

    The blob store makes the blob appear only once complete and removes the partial
    one when this raises (over the cap, empty, malformed, or the client went away).
    """
    with blobs.open_write(key) as out:
        writer = _BlobWriter(out, limit)
        if _check_content_type(content_type):
            form = FileFieldReader(content_type, writer.write)
            async for chunk in request.stream():
                form.feed(chunk)
            form.finish()
        else:
            async for chunk in request.stream():
                writer.write(chunk)
        if writer.size == 0:
            raise ApiError(Reason.EMPTY_MEDIA, "the upload is empty", status=422)
    return writer.size, writer.digest.hexdigest()


def _record(
    ctx: GatewayContext, upload_id: str, customer_id: str, uri: str, size: int, digest: str
) -> None:
    with transaction(ctx.pool) as conn:
        record_upload(conn, upload_id, customer_id, uri, size, digest)
