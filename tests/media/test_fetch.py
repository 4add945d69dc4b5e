"""The SSRF guard refuses internal addresses, also behind a redirect; caps hold, and the
time cap and the deadline bound the whole download, not each read."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from media.fetch import fetch, parse_networks, resolve_and_validate
from tests.fixtures.network import StallingHttpServer
from vidinsight.errors import PermanentError, Reason, StageTimeout

ONLY_127_0_0_1 = parse_networks("127.0.0.1/32")
# A stalling source must be given up this long after the call began...
DEADLINE_SECONDS = 3.0
# ...and no later than this after that, even on a loaded two-core machine.
SLACK_SECONDS = 3.0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/video.mp4",
        "http://localhost:8081/",
        "http://[::1]/",
        "http://192.168.1.10/",
        "http://[::ffff:127.0.0.1]/",
        "file:///etc/passwd",
    ],
)
def test_guard_refuses_internal_addresses(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        resolve_and_validate(url)
    assert caught.value.reason is Reason.SOURCE_FORBIDDEN


class Recorder(ThreadingHTTPServer):
    hits: list[str]
    hosts: list[str]  # the Host header of each request


def serve(host: str, handler: type[BaseHTTPRequestHandler]) -> Recorder:
    server = Recorder((host, 0), handler)
    server.hits, server.hosts = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    """A "public" server on 127.0.0.1 (allowlisted) and an internal one on 127.0.0.2."""

    class Internal(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.server.hits.append(self.path)  # type: ignore[attr-defined]
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal secret")

        def log_message(self, *args: object) -> None:
            pass

    internal = serve("127.0.0.2", Internal)

    class Public(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.server.hits.append(self.path)  # type: ignore[attr-defined]
            self.server.hosts.append(self.headers.get("Host", ""))  # type: ignore[attr-defined]
            if self.path == "/to-loopback":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.2:{internal.server_port}/secret")
                self.end_headers()
                return
            if self.path == "/to-metadata":
                self.send_response(307)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
                return
            body = b"x" * 5000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    public = serve("127.0.0.1", Public)
    yield public, internal
    public.shutdown()
    internal.shutdown()


def _fetch(url: str, max_bytes: int = 10_000) -> bytes:
    sink = io.BytesIO()
    fetch(
        url,
        sink,
        max_bytes=max_bytes,
        timeout_seconds=10,
        connect_timeout_seconds=2,
        max_redirects=3,
        allowed=ONLY_127_0_0_1,
    )
    return sink.getvalue()


def test_redirect_to_loopback_is_refused(servers: tuple[Recorder, Recorder]) -> None:
    public, internal = servers
    with pytest.raises(PermanentError) as caught:
        _fetch(f"http://127.0.0.1:{public.server_port}/to-loopback")
    assert caught.value.reason is Reason.SOURCE_FORBIDDEN
    assert "127.0.0.2" in caught.value.message
    assert public.hits == ["/to-loopback"]
    assert internal.hits == []  # the internal server was never contacted


def test_redirect_to_metadata_is_refused(servers: tuple[Recorder, Recorder]) -> None:
    public, _ = servers
    with pytest.raises(PermanentError) as caught:
        _fetch(f"http://127.0.0.1:{public.server_port}/to-metadata")
    assert caught.value.reason is Reason.SOURCE_FORBIDDEN


def test_allowed_source_is_fetched_within_its_size_cap(servers: tuple[Recorder, Recorder]) -> None:
    public, _ = servers
    assert _fetch(f"http://127.0.0.1:{public.server_port}/video.mp4") == b"x" * 5000
    with pytest.raises(PermanentError) as caught:
        _fetch(f"http://127.0.0.1:{public.server_port}/video.mp4", max_bytes=1000)
    assert caught.value.reason is Reason.TOO_LARGE


def test_a_name_that_rebinds_after_the_check_is_still_fetched_from_the_checked_address(
    servers: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS answers 127.0.0.1 (allowed) to the guard, then 127.0.0.2 (internal) to whoever
    asks next: the request goes to the address the guard checked, never to the new one."""
    public, internal = servers
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "media.rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.2")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    body = _fetch(f"http://media.rebind.test:{public.server_port}/video.mp4")

    assert body == b"x" * 5000
    assert public.hits == ["/video.mp4"] and public.hosts == [
        f"media.rebind.test:{public.server_port}"
    ]
    assert internal.hits == []


@pytest.fixture(params=["drip-headers", "endless-body"])
def stalling(request: pytest.FixtureRequest) -> Iterator[StallingHttpServer]:
    """A source whose answer never ends: headers one byte a second, or a body for ever."""
    server = StallingHttpServer(request.param, interval_seconds=0.5)
    yield server
    server.close()


def _fetch_stalling(
    server: StallingHttpServer, timeout_seconds: float, deadline: float | None
) -> None:
    fetch(
        server.url("/video.mp4"),
        io.BytesIO(),
        max_bytes=10**12,
        timeout_seconds=timeout_seconds,
        connect_timeout_seconds=2,
        max_redirects=3,
        allowed=ONLY_127_0_0_1,
        deadline=deadline,
    )


def test_a_stalling_source_ends_at_the_deadline(stalling: StallingHttpServer) -> None:
    """Every read succeeds (a byte or a block at a time), yet the whole download ends
    at the deadline, as a StageTimeout, not at the far later fetch time cap."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    with pytest.raises(StageTimeout) as caught:
        _fetch_stalling(stalling, timeout_seconds=600, deadline=deadline)
    ended = time.monotonic()
    assert deadline <= ended <= deadline + SLACK_SECONDS
    assert caught.value.reason is Reason.STAGE_TIMEOUT
    assert stalling.connections == 1


def test_a_stalling_source_ends_at_the_fetch_time_cap(stalling: StallingHttpServer) -> None:
    """The fetch's own time cap is a total bound too, and keeps its own reason."""
    began = time.monotonic()
    with pytest.raises(PermanentError) as caught:
        _fetch_stalling(stalling, timeout_seconds=DEADLINE_SECONDS, deadline=began + 600)
    elapsed = time.monotonic() - began
    assert DEADLINE_SECONDS <= elapsed <= DEADLINE_SECONDS + SLACK_SECONDS
    assert caught.value.reason is Reason.SOURCE_UNREACHABLE
    assert "timed out" in caught.value.message


def test_a_source_that_never_answers_is_unreachable_once_silent_for_the_idle_timeout() -> None:
    """The connection opens (the kernel accepts it) and not one byte comes back: the job
    fails source_unreachable after the idle timeout, long before the fetch's time cap
    or the stage's deadline would end it as a timeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=4) as silent:
        port = silent.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(PermanentError) as caught:
            fetch(
                f"http://127.0.0.1:{port}/video.mp4",
                io.BytesIO(),
                max_bytes=10_000,
                timeout_seconds=600,
                connect_timeout_seconds=2,
                idle_timeout_seconds=DEADLINE_SECONDS,
                max_redirects=3,
                allowed=ONLY_127_0_0_1,
                deadline=began + 600,
            )
    elapsed = time.monotonic() - began
    assert DEADLINE_SECONDS <= elapsed <= DEADLINE_SECONDS + SLACK_SECONDS
    assert caught.value.reason is Reason.SOURCE_UNREACHABLE
    assert "sent nothing" in caught.value.message
