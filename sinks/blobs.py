"""The one blob store for media bytes: ``file://`` (default, under the state dir) or ``s3://``.

Messages carry blob URIs, never bytes (claim check). A key is a relative path such as
``media/<job_id>/source`` whose segments are all identifiers (``vidinsight.identifiers``),
so a key has one spelling: no percent escapes, no ``.``/``..`` segments, no query or
fragment. A URI counts as one of the store's blobs only when it is exactly the root, a
slash and such a key; the key is then taken from it and every access goes through the
key (never through the URI decoded), so what was checked is what is read. A job
therefore cannot point the pipeline at a file outside the store, in plain or encoded
form. ``s3://bucket/prefix`` keeps each blob as the object prefix/key (``sinks.s3``).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from sinks.s3 import Bucket
from vidinsight.errors import PermanentError, Reason
from vidinsight.identifiers import is_identifier
from vidinsight.settings import Settings

COPY_BLOCK_BYTES = 1 << 20
# A blob being written (file://) is a file of this prefix beside its key until complete;
# keys start with a letter or digit, so no key is ever taken for one.
PARTIAL_PREFIX = ".partial-"


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in blocks (media and models run to gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(COPY_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class BlobStore:
    """Blobs under one root URI."""

    def __init__(self, root_uri: str, bucket: Bucket | None = None) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.is_local = self.root_uri.startswith("file://")
        if not self.is_local and bucket is None:
            raise ValueError(f"{root_uri}: a blob root is file:// or s3:// (with its bucket)")
        # The root comes from configuration (trusted); only keys come from messages.
        self._root_dir = Path(unquote(urlparse(self.root_uri).path)) if self.is_local else None
        self._bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        root = settings.blob_root_uri or (settings.state_dir / "blobs").resolve().as_uri()
        if root.startswith("s3://"):
            return cls(root, Bucket.from_uri(root, settings))
        return cls(root)

    def _objects(self) -> Bucket:
        if self._bucket is None:
            raise ValueError(f"{self.root_uri} is not an s3:// store")
        return self._bucket

    def uri(self, key: str) -> str:
        """The URI of ``key``; PermanentError for a key that is not canonical."""
        if not is_key(key):
            raise PermanentError(Reason.INVALID_REQUEST, f"invalid blob key {key!r}")
        return f"{self.root_uri}/{key}"

    def key_of(self, uri: str) -> str | None:
        """The key of one of this store's blobs, or None for any other URI."""
        prefix = self.root_uri + "/"
        if not uri.startswith(prefix) or not is_key(uri[len(prefix) :]):
            return None
        return uri[len(prefix) :]

    def owns(self, uri: str) -> bool:
        """Whether ``uri`` is, canonically, a blob of this store."""
        return self.key_of(uri) is not None

    def _own_key(self, uri: str) -> str:
        key = self.key_of(uri)
        if key is None:
            raise PermanentError(Reason.SOURCE_FORBIDDEN, "not a blob of this platform's store")
        return key

    def local_file(self, uri: str) -> Path:
        """The file of one of this store's blobs when the store is ``file://``."""
        return self._file(self._own_key(uri))

    def _file(self, key: str) -> Path:
        if self._root_dir is None:
            raise ValueError(f"{self.root_uri} is not a file:// store")
        return self._root_dir / key

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Write a blob; it appears under its key only once complete (local: rename; S3: a
        multipart upload completed, or aborted when the block raises)."""
        self.uri(key)  # refuses a key that is not canonical
        if self.is_local:
            target = self._file(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=PARTIAL_PREFIX, delete=False
            ) as handle:
                try:
                    yield handle  # type: ignore[misc]
                except BaseException:
                    Path(handle.name).unlink(missing_ok=True)
                    raise
            Path(handle.name).replace(target)
            return
        with self._objects().open_write(key) as remote:
            yield remote  # type: ignore[misc]

    def put_file(self, source: Path, key: str) -> str:
        """Copy a local file into the store; its URI."""
        with source.open("rb") as src, self.open_write(key) as dst:
            shutil.copyfileobj(src, dst, COPY_BLOCK_BYTES)
        return self.uri(key)

    def put_bytes(self, data: bytes, key: str) -> str:
        with self.open_write(key) as dst:
            dst.write(data)
        return self.uri(key)

    def size(self, uri: str) -> int:
        key = self._own_key(uri)
        if self.is_local:
            return self._file(key).stat().st_size
        return self._objects().size(key)

    def delete(self, uri: str) -> None:
        """Delete one of this store's blobs; one already gone is fine."""
        key = self._own_key(uri)
        if self.is_local:
            self._file(key).unlink(missing_ok=True)
            return
        self._objects().delete(key)

    def remove_stale_partials(self, prefix: str, older_than: datetime) -> int:
        """Remove blobs under the key ``prefix`` left half-written (their writer died)
        and untouched since ``older_than``; how many. A live writer keeps its file's
        modification time fresh, so its file is left alone.

        Only a ``file://`` store has such files: an ``s3://`` blob being written is a
        multipart upload that never becomes an object unless completed (the bucket's
        AbortIncompleteMultipartUpload lifecycle rule reclaims a dead writer's parts).
        """
        if self._root_dir is None or not is_key(prefix):
            return 0
        cutoff = older_than.timestamp()
        removed = 0
        for partial in self._file(prefix).rglob(f"{PARTIAL_PREFIX}*"):
            if partial.is_file() and partial.stat().st_mtime < cutoff:
                partial.unlink(missing_ok=True)
                removed += 1
        return removed

    @contextmanager
    def local_path(self, uri: str) -> Iterator[Path]:
        """A local file holding the blob: the file itself for file://, a temporary copy else."""
        key = self._own_key(uri)
        if self.is_local:
            path = self._file(key)
            if not path.is_file():
                raise PermanentError(Reason.SOURCE_UNREACHABLE, f"blob {key} does not exist")
            yield path
            return
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "blob"
            self._objects().download(key, copy)
            yield copy


def is_key(key: str) -> bool:
    """Whether ``key`` is canonical: identifier segments joined by single slashes."""
    return all(is_identifier(segment) for segment in key.split("/"))
