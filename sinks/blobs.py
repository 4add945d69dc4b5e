"""The one blob store for media bytes: ``file://`` (default, under the state dir) or ``s3://``.

Messages carry blob URIs, never bytes (claim check). Keys are relative paths such as
``media/<job_id>/source``; a key that tries to leave the store's root is refused, and
only URIs under the root count as the platform's own blobs, so a job cannot point
the pipeline at an arbitrary file on a worker's disk. ``s3://`` goes through fsspec
and needs ``s3fs`` installed (not in the lock yet).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import fsspec

from vidinsight.errors import PermanentError, Reason
from vidinsight.settings import Settings

COPY_BLOCK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in blocks (media and models run to gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(COPY_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class BlobStore:
    """Blobs under one root URI."""

    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.is_local = self.root_uri.startswith("file://")

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        root = settings.blob_root_uri or (settings.state_dir / "blobs").resolve().as_uri()
        return cls(root)

    def uri(self, key: str) -> str:
        """The URI of ``key``; PermanentError for keys that would escape the root."""
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise PermanentError(Reason.INVALID_REQUEST, f"invalid blob key {key!r}")
        return f"{self.root_uri}/{key}"

    def owns(self, uri: str) -> bool:
        """Whether ``uri`` is a blob of this store (and not a path that climbs out of it)."""
        if not uri.startswith(self.root_uri + "/"):
            return False
        return ".." not in uri[len(self.root_uri) + 1 :].split("/")

    def local_file(self, uri: str) -> Path:
        """The file of a ``file://`` blob."""
        return Path(unquote(urlparse(uri).path))

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Write a blob; it appears under its key only once complete (local: rename)."""
        uri = self.uri(key)
        if self.is_local:
            target = self.local_file(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
                try:
                    yield handle  # type: ignore[misc]
                except BaseException:
                    Path(handle.name).unlink(missing_ok=True)
                    raise
            Path(handle.name).replace(target)
            return
        with fsspec.open(uri, "wb") as remote:
            yield remote

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
        if self.is_local:
            return self.local_file(uri).stat().st_size
        fs, path = fsspec.core.url_to_fs(uri)
        return int(fs.size(path))

    @contextmanager
    def local_path(self, uri: str) -> Iterator[Path]:
        """A local file holding the blob: the file itself for file://, a temporary copy else."""
        if not self.owns(uri):
            raise PermanentError(Reason.SOURCE_FORBIDDEN, f"{uri} is not a blob of this store")
        if self.is_local:
            path = self.local_file(uri)
            if not path.exists():
                raise PermanentError(Reason.SOURCE_UNREACHABLE, f"blob {uri} does not exist")
            yield path
            return
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "blob"
            with fsspec.open(uri, "rb") as src, copy.open("wb") as dst:
                shutil.copyfileobj(src, dst, COPY_BLOCK_BYTES)
            yield copy
