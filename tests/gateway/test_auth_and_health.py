"""Who may call the API, and the probes operators use; over real HTTP."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.readiness import PROBE_TIMEOUT_SECONDS
from sinks.customers import revoke_key
from sinks.db import Pool, transaction
from tests.gateway.conftest import (
    Customer,
    FirebaseKeys,
    GatewayFactory,
    RunningGateway,
    free_port,
)


def assert_unauthenticated(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["reason"] == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_api_key_admits_its_customer(gateway: RunningGateway, customer: Customer) -> None:
    with gateway.client(customer) as client:
        answer = client.get("/v1/jobs")
    assert answer.status_code == 200
    assert answer.json() == {"jobs": [], "next_cursor": None}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-key", "Bearer vi_unknown-key"],
    ids=["missing", "empty", "no-credential", "basic", "malformed", "unknown-key"],
)
def test_missing_malformed_or_unknown_credentials_are_401(
    gateway: RunningGateway, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with gateway.client() as client:
        assert_unauthenticated(client.get("/v1/jobs", headers=headers))


def test_revoked_key_is_401(gateway: RunningGateway, customer: Customer, db_pool: Pool) -> None:
    with gateway.client(customer) as client:
        assert client.get("/v1/jobs").status_code == 200
        with transaction(db_pool) as conn:
            assert revoke_key(conn, customer.api_key)
        assert_unauthenticated(client.get("/v1/jobs"))


def test_firebase_token_admits_the_mapped_customer(
    gateway: RunningGateway, customer: Customer, firebase_keys: FirebaseKeys
) -> None:
    token = firebase_keys.token(customer.firebase_uid)
    with gateway.client() as client:
        answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text


def _bad_tokens(keys: FirebaseKeys, uid: str) -> dict[str, str]:
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "expired": keys.token(uid, iat=now - 7200, exp=now - 3600),
        "wrong-audience": keys.token(uid, aud="someone-elses-project"),
        "wrong-issuer": keys.token(uid, iss="https://securetoken.google.com/other"),
        "issued-in-future": keys.token(uid, iat=now + 600, exp=now + 4000),
        "no-expiry": keys.token(uid, exp=None),
        "foreign-signature": keys.token(uid, key=stranger),
        "unknown-key-id": keys.token(uid, kid="not-in-jwks"),
        "unknown-user": keys.token("uid-nobody-has"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "issued-in-future",
        "no-expiry",
        "foreign-signature",
        "unknown-key-id",
        "unknown-user",
    ],
)
def test_invalid_firebase_tokens_are_401(
    gateway: RunningGateway, customer: Customer, firebase_keys: FirebaseKeys, case: str
) -> None:
    token = _bad_tokens(firebase_keys, customer.firebase_uid)[case]
    with gateway.client() as client:
        assert_unauthenticated(client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}))


def test_probes_and_metrics(gateway: RunningGateway, customer: Customer) -> None:
    gateway.wait_probed()
    with gateway.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok", "registry": "ok"}
        client.get("/v1/jobs", headers=customer.headers)
        assert client.get("/metrics").status_code == 404  # not on the public listener
    exposition = httpx.get(gateway.metrics_url, timeout=10)
    assert exposition.status_code == 200
    assert (
        'vidinsight_gateway_request_duration_seconds_count{method="GET",route="/v1/jobs",status="200"}'
        in (exposition.text)
    )
    assert 'vidinsight_jobs_in_flight{status="queued"}' in exposition.text


def test_readyz_is_503_when_the_registry_is_unreachable(
    gateway_factory: GatewayFactory,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    running = gateway_factory(registry_url=dead, gateway_jobs_topic="unused.jobs.requested")
    running.wait_probed()
    with running.client() as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["reason"] == "registry_unavailable"
    assert answer.headers["retry-after"] == "5"


def test_start_up_does_not_wait_for_an_unreachable_kafka(
    gateway_factory: GatewayFactory,
) -> None:
    """A gateway restarted while the broker is down serves at once (jobs wait in the
    outbox): start-up never waits for a readiness probe, which takes its whole timeout
    against a dependency that is down."""
    closed = f"127.0.0.1:{free_port()}"
    began = time.monotonic()
    running = gateway_factory(kafka_bootstrap=closed, gateway_jobs_topic="unused.jobs.requested")
    started_in = time.monotonic() - began
    with running.client() as client:
        alive = client.get("/healthz")
        starting = client.get("/readyz")
        answered_in = time.monotonic() - began
        running.wait_probed()
        probed = client.get("/readyz")
    assert started_in < PROBE_TIMEOUT_SECONDS / 2
    # The first round's Kafka probe alone takes PROBE_TIMEOUT_SECONDS, so it has not ended.
    assert answered_in < PROBE_TIMEOUT_SECONDS
    assert alive.status_code == 200
    assert starting.status_code == 503
    assert starting.json()["error"]["message"] == "not ready: probes: starting"
    assert probed.status_code == 503
    assert probed.json()["error"]["reason"] == "broker_unavailable"
    assert "kafka: unreachable" in probed.json()["error"]["message"]


def test_unknown_route_uses_the_error_shape(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        answer = client.get("/v1/nothing-here")
    assert answer.status_code == 404
    assert answer.json()["error"]["reason"] == "not_found"


def test_firebase_key_server_down_is_503_not_401(
    gateway_factory: GatewayFactory, customer: Customer, firebase_keys: FirebaseKeys
) -> None:
    gateway = gateway_factory(firebase_jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
    token = firebase_keys.token(customer.firebase_uid)
    with gateway.client() as client:
        answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        with_key = client.get("/v1/jobs", headers=customer.headers)
    assert answer.status_code == 503
    assert answer.json()["error"]["reason"] == "provider_unavailable"
    assert "retry-after" in answer.headers
    assert with_key.status_code == 200  # API keys do not depend on Google


class ErrorPage(BaseHTTPRequestHandler):
    """A key server behind a proxy that answers an HTML page instead of a key set."""

    def do_GET(self) -> None:
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_key_server_answering_an_error_page_is_503_not_500(
    gateway_factory: GatewayFactory, customer: Customer, firebase_keys: FirebaseKeys
) -> None:
    page = ThreadingHTTPServer(("127.0.0.1", 0), ErrorPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        gateway = gateway_factory(firebase_jwks_url=f"http://127.0.0.1:{page.server_port}/jwks")
        token = firebase_keys.token(customer.firebase_uid)
        with gateway.client() as client:
            answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    finally:
        page.shutdown()
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["reason"] == "provider_unavailable"


def test_readyz_refuses_once_its_background_probes_stop(gateway_factory: GatewayFactory) -> None:
    """A probing thread that died or hangs must not leave /readyz answering its last
    "ready" for ever."""
    gateway = gateway_factory(gateway_readiness_interval_seconds=0.5)
    gateway.wait_probed()
    gateway.app.state.readiness.stop()
    deadline = time.monotonic() + 60
    with gateway.client() as client:
        assert client.get("/readyz").status_code == 200
        while (answer := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "still ready a minute after the probes stopped"
            time.sleep(0.2)
    assert answer.status_code == 503
    assert answer.json()["error"]["reason"] == "timeout"
    assert "stale" in answer.json()["error"]["message"]
