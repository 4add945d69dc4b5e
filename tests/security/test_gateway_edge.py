"""The gateway's edge, attacked through a real uvicorn gateway.

Bodies before identity (a huge or endless body without a credential, an over-limit JSON
body with one), live-progress streams held open (per-customer cap, a revoked key),
Firebase tokens with random key ids (the key set is fetched at most once), and the
operational endpoints (metrics on their own listener, /readyz answered from the last
background probe).
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest

from sinks.customers import revoke_key
from sinks.db import Pool, transaction
from tests.gateway.conftest import (
    Customer,
    FirebaseKeys,
    GatewayFactory,
    RunningGateway,
    customer,
    firebase_keys,
    gateway_factory,
    other_customer,
)

__all__ = ["customer", "firebase_keys", "gateway_factory", "other_customer"]  # fixtures

TWO_GB = 2 * 1024**3
# Loopback socket buffers hold a few MiB; a server that reads the body lets a client push
# far more than this before it answers.
UNREAD_BOUND_BYTES = 32 * 1024**2
ANSWER_WITHIN_SECONDS = 5.0
# One kilobyte of a chunked body, as a chunk.
CHUNK = b"400\r\n" + b" " * 1024 + b"\r\n"


def _raw_post(gateway: RunningGateway, headers: dict[str, str]) -> socket.socket:
    """A POST /v1/jobs whose request line and headers are sent, its body not yet."""
    sock = socket.create_connection(("127.0.0.1", gateway.settings.gateway_port))
    lines = ["POST /v1/jobs HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _push_until_answered(sock: socket.socket, chunk: bytes) -> tuple[bytes, int]:
    """Send ``chunk`` after ``chunk`` as fast as the socket takes them until the server
    answers; return the answer and how many body bytes the client got rid of."""
    sock.setblocking(False)
    sent = 0
    refused = False  # the server closed its side: stop pushing, read what it answered
    deadline = time.monotonic() + ANSWER_WITHIN_SECONDS
    while time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [] if refused else [sock], [], 0.01)
        if readable:
            return _read_answer(sock), sent
        if writable and sent < UNREAD_BOUND_BYTES:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                refused = True
    pytest.fail(f"no answer within {ANSWER_WITHIN_SECONDS} s after {sent} body bytes")


def _refused(sock: socket.socket, chunk: bytes) -> bool:
    """True once pushing ``chunk`` after ``chunk`` (as fast as the socket takes them)
    fails because the server closed the connection; False after UNREAD_BOUND_BYTES or the
    answer bound: a server that reads on takes bytes without end, and one that stopped
    reading without closing takes what socket buffers hold, then nothing. The kernel
    refuses on a closed socket's behalf, so how fast the server runs does not matter."""
    sock.setblocking(False)
    pushed = 0
    deadline = time.monotonic() + ANSWER_WITHIN_SECONDS
    while pushed < UNREAD_BOUND_BYTES and time.monotonic() < deadline:
        select.select([], [sock], [], 0.01)
        try:
            pushed += sock.send(chunk)
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _read_answer(sock: socket.socket) -> bytes:
    """The whole answer: its head and Content-Length bytes of body, which may arrive in
    separate segments."""
    sock.setblocking(True)
    sock.settimeout(ANSWER_WITHIN_SECONDS)
    answer = b""
    while True:
        head, _, body = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head + b"\r\n")
        if length and len(body) >= int(length.group(1)):
            return answer
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            more = b""
        except TimeoutError:
            pytest.fail(f"no whole answer within {ANSWER_WITHIN_SECONDS} s: {answer!r}")
        if not more:
            return answer
        answer += more


def _status_and_reason(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["reason"]


def test_an_unauthenticated_endless_body_is_refused_before_it_is_read(
    gateway_factory: GatewayFactory,
) -> None:
    """Chunked, endless, no credential: the first kilobyte arrives and the body stalls,
    yet the 401 comes (so it waited for none of the body, however slow the server); the
    server then hangs up, and the client pushing on is refused instead of read."""
    gateway = gateway_factory()
    sock = _raw_post(gateway, {"Transfer-Encoding": "chunked"})
    with sock:
        sock.sendall(CHUNK)  # and nothing more until the answer
        answer = _read_answer(sock)
        assert _status_and_reason(answer) == (401, "unauthenticated")
        assert _hung_up(sock)
        assert _refused(sock, CHUNK)


def test_an_unauthenticated_two_gigabyte_body_is_refused_unread(
    gateway_factory: GatewayFactory,
) -> None:
    """A declared 2 GB body pushed as fast as the socket takes it: refused at once; the
    client cannot push more than socket buffers hold before the answer and the hang-up."""
    gateway = gateway_factory()
    sock = _raw_post(gateway, {"Content-Length": str(TWO_GB)})
    with sock:
        started = time.monotonic()
        answer, sent = _push_until_answered(sock, b" " * 65536)
        assert time.monotonic() - started < ANSWER_WITHIN_SECONDS
        assert _status_and_reason(answer) in {(401, "unauthenticated"), (413, "body_too_large")}
        assert sent < UNREAD_BOUND_BYTES
        assert _hung_up(sock)


def _hung_up(sock: socket.socket) -> bool:
    """True once the server has closed the connection (within the answer bound)."""
    sock.setblocking(True)
    sock.settimeout(ANSWER_WITHIN_SECONDS)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_an_authenticated_json_body_over_the_limit_is_413(
    gateway_factory: GatewayFactory, customer: Customer
) -> None:
    """Declared or streamed, a JSON body over VI_GATEWAY_MAX_JSON_BYTES is 413
    body_too_large, and nothing is submitted."""
    gateway = gateway_factory(gateway_max_json_bytes=4096)
    padding = " " * 8192
    declared = json.dumps({"source_url": "https://example.com/a.mp4"}) + padding

    def streamed() -> Iterator[bytes]:
        yield b'{"source_url": "https://example.com/b.mp4"}'
        for _ in range(64):
            yield b" " * 1024

    with gateway.client(customer) as client:
        for body in (declared.encode(), streamed()):
            answer = client.post(
                "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 413, answer.text
            assert answer.json()["error"]["reason"] == "body_too_large"
        assert client.get("/v1/jobs").json()["jobs"] == []
        small = client.post("/v1/jobs", json={"source_url": "https://example.com/c.mp4"})
        assert small.status_code == 202, small.text


def _submit(gateway: RunningGateway, owner: Customer) -> str:
    with gateway.client(owner) as client:
        answer = client.post("/v1/jobs", json={"source_url": "https://example.com/a.mp4"})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def _open_stream(
    stack: ExitStack, gateway: RunningGateway, owner: Customer, job_id: str
) -> httpx.Response:
    client = stack.enter_context(httpx.Client(base_url=gateway.url, headers=owner.headers))
    return stack.enter_context(client.stream("GET", f"/v1/jobs/{job_id}/events"))


def _poll(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def test_a_customer_holds_at_most_the_cap_of_event_streams(
    gateway_factory: GatewayFactory, customer: Customer, other_customer: Customer
) -> None:
    gateway = gateway_factory(gateway_sse_max_streams_per_customer=2)
    job_id = _submit(gateway, customer)
    with ExitStack() as first:
        for _ in range(2):
            assert _open_stream(first, gateway, customer, job_id).status_code == 200
        with gateway.client(customer) as client:
            refused = client.get(f"/v1/jobs/{job_id}/events")
        assert refused.status_code == 429
        assert refused.json()["error"]["reason"] == "too_many_streams"
        assert int(refused.headers["retry-after"]) > 0
        other_job = _submit(gateway, other_customer)
        with ExitStack() as other:  # the cap is the customer's, not the gateway's
            assert _open_stream(other, gateway, other_customer, other_job).status_code == 200

    def reopened() -> bool:
        with ExitStack() as again:
            return _open_stream(again, gateway, customer, job_id).status_code == 200

    _poll(reopened, "a stream accepted again once the customer's streams closed")


def test_a_stream_ends_when_its_api_key_is_revoked(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool
) -> None:
    gateway = gateway_factory(gateway_sse_poll_seconds=0.05)
    job_id = _submit(gateway, customer)
    seen: list[str] = []
    started = time.monotonic()
    with ExitStack() as stack:
        stream = _open_stream(stack, gateway, customer, job_id)
        for line in stream.iter_lines():
            seen.append(line)
            if line.startswith("data: ") and len(seen) == 2:  # the first view
                with transaction(db_pool) as conn:
                    assert revoke_key(conn, customer.api_key)
        # The loop ends because the server ended the stream.
    assert time.monotonic() - started < 10
    assert "event: error" in seen
    error = json.loads(seen[seen.index("event: error") + 1].removeprefix("data: "))
    assert error["error"]["reason"] == "unauthenticated"
    with gateway.client(customer) as client:
        assert client.get(f"/v1/jobs/{job_id}/events").status_code == 401


def test_random_firebase_key_ids_fetch_the_key_set_at_most_once(
    gateway_factory: GatewayFactory, customer: Customer
) -> None:
    """Two hundred tokens with random key ids, many at once, against a key server that
    takes 0.3 s to answer: one fetch of the key set (the double counts them), each token
    401; a genuine token then needs no fetch."""
    keys = FirebaseKeys(delay_seconds=0.3)
    try:
        gateway = gateway_factory(
            firebase_jwks_url=keys.url, firebase_jwks_min_refetch_seconds=3600
        )
        tokens = [keys.token(customer.firebase_uid, kid=uuid.uuid4().hex) for _ in range(200)]
        with gateway.client() as client, ThreadPoolExecutor(max_workers=32) as pool:

            def attempt(token: str) -> str:
                answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code == 401, answer.text
                reason: str = answer.json()["error"]["reason"]
                return reason

            assert set(pool.map(attempt, tokens)) == {"unauthenticated"}
            assert keys.fetches == 1
            genuine = keys.token(customer.firebase_uid)
            answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {genuine}"})
        assert answer.status_code == 200, answer.text
        assert keys.fetches == 1
    finally:
        keys.close()


def test_metrics_are_not_served_on_the_public_listener(
    gateway_factory: GatewayFactory, customer: Customer
) -> None:
    gateway = gateway_factory()
    with gateway.client(customer) as client:
        assert client.get("/v1/jobs").status_code == 200
        public = client.get("/metrics")
    assert public.status_code == 404
    assert "vidinsight_" not in public.text
    private = httpx.get(gateway.metrics_url, timeout=10)
    assert private.status_code == 200
    assert "vidinsight_gateway_request_duration_seconds" in private.text


def test_a_burst_of_readyz_costs_no_dependency_calls(gateway_factory: GatewayFactory) -> None:
    """Two hundred /readyz answer from the last background round: no probe runs for them."""
    gateway = gateway_factory(gateway_readiness_interval_seconds=3600)
    gateway.wait_probed()
    readiness = gateway.app.state.readiness
    rounds = readiness.rounds
    with gateway.client() as client:
        answers = [client.get("/readyz") for _ in range(200)]
    assert {answer.status_code for answer in answers} == {200}
    assert answers[-1].json()["checks"] == {"postgres": "ok", "kafka": "ok", "registry": "ok"}
    assert readiness.rounds == rounds == 1  # the first round only
