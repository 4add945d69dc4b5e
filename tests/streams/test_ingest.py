"""Ingest as a real worker: rejections become failed jobs with their reason; the partition flows."""

from __future__ import annotations

import hashlib
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fixtures.media import GeneratedMedia, MediaPipeline


class FileServer(ThreadingHTTPServer):
    hits: list[str]
    media: GeneratedMedia


class Files(BaseHTTPRequestHandler):
    """Serves the generated files by name; /to-loopback redirects to an internal address."""

    def do_GET(self) -> None:
        server: FileServer = self.server  # type: ignore[assignment]
        server.hits.append(self.path)
        if self.path == "/to-loopback":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:8081/apis/ccompat/v7/subjects")
            self.end_headers()
            return
        path = server.media.file(self.path.lstrip("/"))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve_files(media: GeneratedMedia) -> FileServer:
    server = FileServer(("127.0.0.1", 0), Files)
    server.hits, server.media = [], media
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


REJECTIONS = [
    ("empty.mp4", "empty_media"),
    ("notes.mp4", "not_media"),
    ("truncated.mp4", "corrupt_media"),
    ("subtitles.mkv", "no_streams"),
    ("long.mp4", "too_long"),
    ("large.wav", "too_large"),
]
FORBIDDEN_SOURCES = [
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://10.0.0.1/video.mp4",
    "http://127.0.0.2:9/video.mp4",
    "file:///etc/passwd",
]


def test_rejections_fail_their_jobs_and_never_block_the_partition(
    media_pipeline: MediaPipeline, generated_media: GeneratedMedia
) -> None:
    """All on one partition: each bad job fails with its reason; the good one after them lands."""
    run = uuid.uuid4().hex[:8]
    server = serve_files(generated_media)
    base = f"http://127.0.0.1:{server.server_port}"
    media_pipeline.start(
        "ingest",
        VI_MAX_MEDIA_BYTES="300000",
        VI_MAX_DURATION_SECONDS="8",
        VI_FETCH_ALLOWED_NETWORKS="127.0.0.1/32",  # stands in for a public server
    )
    expected: dict[str, str] = {}
    for name, reason in REJECTIONS:
        job_id = f"job-{run}-{name}"
        media_pipeline.submit(job_id, media_pipeline.upload(generated_media.file(name), job_id))
        expected[job_id] = reason
    for index, source in enumerate(FORBIDDEN_SOURCES):
        job_id = f"job-{run}-forbidden-{index}"
        media_pipeline.submit(job_id, source)
        expected[job_id] = "source_forbidden"
    for name, source, reason in [
        ("redirected", f"{base}/to-loopback", "source_forbidden"),
        ("refused", "http://127.0.0.1:9/video.mp4", "source_unreachable"),
        ("missing", f"{base}/missing.mp4", "source_unreachable"),
    ]:
        media_pipeline.submit(f"job-{run}-{name}", source)
        expected[f"job-{run}-{name}"] = reason
    theirs = f"job-{run}-other-customers-upload"
    media_pipeline.submit(
        theirs, media_pipeline.upload(generated_media.file("short.mp4"), theirs, "cust-other")
    )
    expected[theirs] = "source_forbidden"
    fetched = f"job-{run}-fetched"
    media_pipeline.submit(fetched, f"{base}/short.mp4")
    good = f"job-{run}-good"
    good_uri = media_pipeline.upload(generated_media.file("short.mp4"), good)
    media_pipeline.submit(good, good_uri)

    for job_id, reason in expected.items():
        job = media_pipeline.wait_job(job_id, ("failed",))
        assert (job["error_stage"], job["error_reason"]) == ("ingest", reason), job
        assert len(job["error_message"]) > 10, job
    landed = media_pipeline.wait_job(good, ("running",))
    assert landed["status"] == "running"
    # It came from Kafka: the gateway's outbox relay must not take it for unsent.
    assert landed["published_at"] is not None
    by_job = {m["job_id"]: m for m in media_pipeline.read("ingested", 2)}
    assert set(by_job) == {fetched, good}
    copied, ingested = by_job[fetched], by_job[good]
    assert copied["media_uri"].endswith(f"/media/{fetched}/source")
    short = generated_media.file("short.mp4").read_bytes()
    assert copied["sha256"] == hashlib.sha256(short).hexdigest()
    assert copied["size_bytes"] == len(short)
    assert server.hits.count("/short.mp4") == 1
    server.shutdown()
    assert ingested["media_uri"] == good_uri
    assert (ingested["has_audio"], ingested["has_video"]) == (True, True)
    assert ingested["duration_seconds"] == 4.0
    assert ingested["video"]["width"] == 160
    assert len(ingested["sha256"]) == 64
    parked = media_pipeline.read("dlq", len(expected) + 1, timeout=10)
    assert {p["job_id"]: p["reason"] for p in parked} == expected  # the good job is not parked
    assert [w.process.poll() for w in media_pipeline.workers] == [None]  # no crash loop
