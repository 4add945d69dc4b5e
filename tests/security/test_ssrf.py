"""SSRF through IPv6 spellings of internal IPv4 addresses, against a real ingest worker.

Each source names an internal IPv4 host inside an IPv6 address (mapped, compatible,
translated, NAT64, 6to4, Teredo); ``64:ff9b::a9fe:a9fe`` counts as global IPv6 to
Python's ``ipaddress`` and is the cloud metadata service behind any NAT64 gateway. The
job must fail ``source_forbidden`` before a connection is made, on the first hop and
after a redirect from a public server alike.
"""

from __future__ import annotations

import ipaddress
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from media.fetch import address_allowed
from tests.fixtures.media import MediaPipeline


def _embeddings(inner: str) -> list[str]:
    """``inner`` (an IPv4 address) in every IPv6 form that carries one."""
    v4 = int(ipaddress.IPv4Address(inner))
    hi, lo = v4 >> 16, v4 & 0xFFFF
    inverted = v4 ^ 0xFFFFFFFF
    return [
        f"::ffff:{inner}",  # mapped
        f"::{hi:x}:{lo:x}",  # compatible
        f"::ffff:0:{hi:x}:{lo:x}",  # translated (RFC 2765)
        f"64:ff9b::{hi:x}:{lo:x}",  # NAT64 well-known prefix
        f"64:ff9b:1::{hi:x}:{lo:x}",  # NAT64 local-use prefix
        f"2002:{hi:x}:{lo:x}::1",  # 6to4
        f"2001:0:4136:e378:8000:63bf:{inverted >> 16:x}:{inverted & 0xFFFF:x}",  # Teredo
    ]


INTERNAL = ["169.254.169.254", "127.0.0.2", "10.0.0.1"]


@pytest.mark.parametrize("inner", INTERNAL)
def test_every_ipv6_form_of_an_internal_address_is_refused(inner: str) -> None:
    for form in _embeddings(inner):
        assert not address_allowed(ipaddress.ip_address(form)), form


def test_ipv6_forms_of_public_addresses_stay_allowed() -> None:
    for form in _embeddings("8.8.8.8"):
        if "64:ff9b:1:" not in form:
            assert address_allowed(ipaddress.ip_address(form)), form


def test_nat64_local_use_is_refused_whatever_it_seems_to_carry() -> None:
    """Under a /48 local-use translator, 64:ff9b:1:7f00:0:100:808:808 is 127.0.0.1,
    though its low 32 bits read 8.8.8.8 (RFC 6052 places the address by prefix length)."""
    for form in ("64:ff9b:1:7f00:0:100:808:808", "64:ff9b:1::808:808"):
        assert not address_allowed(ipaddress.ip_address(form)), form


class Recorder(ThreadingHTTPServer):
    hits: list[str]


class _Answer(BaseHTTPRequestHandler):
    """200 to anything, except ``/go?to=URL``: a redirect to URL."""

    def do_GET(self) -> None:
        server: Recorder = self.server  # type: ignore[assignment]
        server.hits.append(self.path)
        target = parse_qs(urlsplit(self.path).query).get("to")
        self.send_response(302 if target else 200)
        if target:
            self.send_header("Location", target[0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(host: str) -> Recorder:
    server = Recorder((host, 0), _Answer)
    server.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def internal() -> Iterator[Recorder]:
    """An internal service on 127.0.0.2, which no job may reach."""
    server = _serve("127.0.0.2")
    yield server
    server.shutdown()


def test_ingest_refuses_embedded_internal_addresses_first_hop_and_redirected(
    media_pipeline: MediaPipeline, internal: Recorder
) -> None:
    port = internal.server_port
    forms = _embeddings("127.0.0.2") + _embeddings("169.254.169.254")
    public = _serve("127.0.0.1")
    try:
        media_pipeline.start("ingest", VI_FETCH_ALLOWED_NETWORKS="127.0.0.1/32")
        run = uuid.uuid4().hex[:8]
        expected = []
        for index, form in enumerate(forms):
            job_id = f"job-{run}-direct-{index}"
            media_pipeline.submit(job_id, f"http://[{form}]:{port}/latest/meta-data/")
            expected.append(job_id)
        for index, form in enumerate(forms):  # a public server redirects to each form
            target = quote(f"http://[{form}]:{port}/latest/meta-data/", safe="")
            job_id = f"job-{run}-redirected-{index}"
            media_pipeline.submit(job_id, f"http://127.0.0.1:{public.server_port}/go?to={target}")
            expected.append(job_id)
        for job_id in expected:
            job = media_pipeline.wait_job(job_id, ("failed",))
            assert (job["error_stage"], job["error_reason"]) == ("ingest", "source_forbidden")
    finally:
        public.shutdown()
    assert len(public.hits) == len(forms)  # each redirect was followed up to the guard
    assert internal.hits == []
