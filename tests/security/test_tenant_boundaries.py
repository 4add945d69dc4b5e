"""Hostile JobRequested messages, produced straight to Kafka as an upstream system can.

Each attack runs against a real ingest worker on private topics and asserts what the
attacker gets: a failed job with a reason, never another tenant's upload, never a
file written outside the blob store, never a server path or a signed URL's query in
what is stored or shown; and the partition keeps flowing for everyone else.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sinks.blobs import BlobStore
from tests.fixtures.media import GeneratedMedia, MediaPipeline
from vidinsight.settings import Settings

SIGNATURE = "X-Amz-Signature=5ecretS1gnature0f0ne0ff"


class CountingServer(ThreadingHTTPServer):
    """A public server stand-in: serves one file, counts every request it is sent."""

    hits: list[str]
    body: bytes


class _Serve(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: CountingServer = self.server  # type: ignore[assignment]
        server.hits.append(self.path)
        if not self.path.startswith("/talk.mp4"):
            self.send_error(403)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(server.body)))
        self.end_headers()
        self.wfile.write(server.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def public_server(generated_media: GeneratedMedia) -> Iterator[CountingServer]:
    server = CountingServer(("127.0.0.1", 0), _Serve)
    server.hits, server.body = [], generated_media.file("short.mp4").read_bytes()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _encoded_escapes(root: str, theirs_key: str) -> list[str]:
    """The other tenant's upload, named from inside our own upload folder in every spelling
    that decodes, normalises or truncates to it."""
    ours = f"{root}/uploads/cust-media"
    return [
        f"{ours}/%2e%2e/{theirs_key.removeprefix('uploads/')}",
        f"{ours}/..%2F{theirs_key.removeprefix('uploads/')}",
        f"{ours}/%2E%2E%2F%2E%2E%2F{theirs_key}",
        f"{ours}/x/../../{theirs_key.removeprefix('uploads/')}",
        f"{ours}/x#/../../{theirs_key.removeprefix('uploads/')}",
        f"{ours}/x?/../../{theirs_key.removeprefix('uploads/')}",
        f"{root}//{theirs_key}",
        f"{root}/{theirs_key}",  # plainly theirs
        f"{root}/uploads/cust-media/../../../../../etc/passwd",
        f"{root}/uploads/cust-media/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ]


def test_no_spelling_of_a_blob_uri_reads_another_tenants_upload(
    media_pipeline: MediaPipeline, generated_media: GeneratedMedia, settings: Settings
) -> None:
    store = BlobStore.from_settings(settings)
    run = uuid.uuid4().hex[:8]
    theirs_id = f"job-{run}-theirs"
    theirs_uri = media_pipeline.upload(generated_media.file("short.mp4"), theirs_id, "cust-other")
    theirs_key = store.key_of(theirs_uri)
    assert theirs_key is not None
    media_pipeline.start("ingest")
    attacks = {}
    for index, uri in enumerate(_encoded_escapes(store.root_uri, theirs_key)):
        job_id = f"job-{run}-escape-{index}"
        media_pipeline.submit(job_id, uri)
        attacks[job_id] = uri
    good = f"job-{run}-good"
    media_pipeline.submit(good, media_pipeline.upload(generated_media.file("short.mp4"), good))

    for job_id, uri in attacks.items():
        job = media_pipeline.wait_job(job_id, ("failed",))
        assert (job["error_stage"], job["error_reason"]) == ("ingest", "source_forbidden"), uri
        _assert_no_server_path(job["error_message"], store)
    assert media_pipeline.wait_job(good, ("running",))["error_reason"] is None
    ingested = media_pipeline.read("ingested", len(attacks) + 1, timeout=10)
    assert [event["job_id"] for event in ingested] == [good]  # nothing of theirs was read


def test_a_job_id_that_names_a_path_writes_nothing_outside_the_store(
    media_pipeline: MediaPipeline, public_server: CountingServer, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / f"escape-{run}"
    hostile_ids = [
        f"../../../../../../..{target}",
        f"..%2F..%2F..%2F..%2F..%2F..%2F..{target}".replace("/", "%2F"),
        f"job-{run}/../../../../escape",
        f"job-{run}\\..\\..\\escape",
        run + "x" * 200,
    ]
    media_pipeline.start("ingest", VI_FETCH_ALLOWED_NETWORKS="127.0.0.1/32")
    source = f"http://127.0.0.1:{public_server.server_port}/talk.mp4"
    for job_id in hostile_ids:
        media_pipeline.submit(job_id, source)
    good = f"job-{run}-good"
    media_pipeline.submit(good, source)

    assert media_pipeline.wait_job(good, ("running",))["error_reason"] is None
    failures = media_pipeline.read("failures", len(hostile_ids), timeout=30)
    assert sorted((f["job_id"], f["status"], f["reason"]) for f in failures) == sorted(
        (job_id, "failed", "invalid_request") for job_id in hostile_ids
    )
    assert not target.exists() and not list(outside.iterdir())
    assert public_server.hits == ["/talk.mp4"]  # only the good job was fetched


def test_a_signed_urls_query_and_server_paths_never_reach_what_is_stored_or_logged(
    media_pipeline: MediaPipeline,
    public_server: CountingServer,
    generated_media: GeneratedMedia,
    settings: Settings,
) -> None:
    store = BlobStore.from_settings(settings)
    run = uuid.uuid4().hex[:8]
    worker = media_pipeline.start("ingest", VI_FETCH_ALLOWED_NETWORKS="127.0.0.1/32")
    signed = f"job-{run}-signed"
    base = f"http://127.0.0.1:{public_server.server_port}"
    media_pipeline.submit(signed, f"{base}/private/talk.mp4?X-Amz-Expires=300&{SIGNATURE}")
    corrupt = f"job-{run}-corrupt"
    media_pipeline.submit(
        corrupt, media_pipeline.upload(generated_media.file("truncated.mp4"), corrupt)
    )

    failed = media_pipeline.wait_job(signed, ("failed",))
    assert failed["error_reason"] == "source_unreachable"
    assert "403" in failed["error_message"] and SIGNATURE not in failed["error_message"]
    broken = media_pipeline.wait_job(corrupt, ("failed",))
    assert broken["error_reason"] == "corrupt_media"
    _assert_no_server_path(broken["error_message"], store)
    letters = media_pipeline.read("dlq", 2, timeout=30)
    assert {letter["job_id"] for letter in letters} == {signed, corrupt}
    for letter in letters:
        assert SIGNATURE not in letter["exception_message"]
        _assert_no_server_path(letter["exception_message"], store)
    assert public_server.hits and all(SIGNATURE in hit for hit in public_server.hits)
    assert SIGNATURE not in worker.log_path.read_text()


def _assert_no_server_path(message: str, store: BlobStore) -> None:
    root = str(store.local_file(store.root_uri + "/x").parent)
    for leak in (root, "/uploads/", "file://", str(Path.home())):
        assert leak not in message, message
