"""Gateway fixtures: the real app served by uvicorn on 127.0.0.1, customers, a local JWKS.

Each gateway under test gets a job-request topic of its own, so its messages never
reach the shared pipeline's ingest workers and other tests' messages never reach it.
Firebase's key server is the only double: a JWKS served on localhost for a key pair
the test makes, in the format Google publishes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from gateway.app import create_app
from sinks.customers import create_customer
from sinks.db import Pool, transaction
from tests.fixtures.kafka import unique_topic
from tests.fixtures.network import free_port
from topics.admin import ensure_topics
from topics.catalogue import TopicSpec
from vidinsight.settings import Settings

FIREBASE_PROJECT = "vi-test-project"
KEY_ID = "test-key-1"


@dataclass
class Customer:
    customer_id: str
    api_key: str
    firebase_uid: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, customer: Customer | None = None) -> httpx.Client:
        headers = customer.headers if customer else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def metrics_url(self) -> str:
        """Its Prometheus endpoint, on the metrics listener (not the API port)."""
        return f"http://127.0.0.1:{self.settings.metrics_port}/metrics"

    @property
    def app(self) -> FastAPI:
        """The served app (its state holds the readiness and the event poller)."""
        app = self.server.config.app
        assert isinstance(app, FastAPI)
        return app

    def wait_lag(self, until: Callable[[int], bool], timeout: float = 30) -> None:
        """Wait until the backpressure monitor's figure satisfies ``until``: it measures on
        its own thread (start-up does not wait for the broker)."""
        lag = self.app.state.context.lag
        deadline = time.monotonic() + timeout
        while (value := lag.lag()) is None or not until(value):
            assert time.monotonic() < deadline, f"lag still {value} after {timeout} s"
            time.sleep(0.02)

    def wait_probed(self, timeout: float = 30) -> None:
        """Wait until the readiness probes have ended their first round: start-up does not
        wait for it, and ``/readyz`` says "starting" until then."""
        readiness = self.app.state.readiness
        deadline = time.monotonic() + timeout
        while readiness.rounds < 1:
            assert time.monotonic() < deadline, f"no round of readiness probes within {timeout} s"
            time.sleep(0.02)


def make_jobs_topic(settings: Settings) -> str:
    """A JobRequested topic of this test's own."""
    spec = TopicSpec(
        name=unique_topic("jobs.requested"),
        partitions=1,
        replication_factor=1,
        value_schema="JobRequested",
    )
    ensure_topics(settings.kafka_bootstrap, [spec])
    return spec.name


class FirebaseKeys:
    """An RSA key pair and a JWKS server on localhost standing in for Google's."""

    def __init__(self, delay_seconds: float = 0.0) -> None:
        """``delay_seconds``: how long each answer takes (Google is a network away)."""
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": KEY_ID, "alg": "RS256", "use": "sig"})
        body = json.dumps({"keys": [jwk]}).encode()
        self.fetches = 0  # key-set requests served
        counted = threading.Lock()
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with counted:
                    keys.fetches += 1
                time.sleep(delay_seconds)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def token(self, uid: str, *, key: Any = None, kid: str = KEY_ID, **claims: Any) -> str:
        """A Firebase-shaped ID token; keyword claims override the valid defaults."""
        now = int(time.time())
        payload = {
            "iss": f"https://securetoken.google.com/{FIREBASE_PROJECT}",
            "aud": FIREBASE_PROJECT,
            "auth_time": now,
            "user_id": uid,
            "sub": uid,
            "iat": now,
            "exp": now + 3600,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.private_key, algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="session")
def firebase_keys() -> Iterator[FirebaseKeys]:
    keys = FirebaseKeys()
    yield keys
    keys.close()


def start_gateway(settings: Settings) -> RunningGateway:
    """Serve ``create_app(settings)`` with uvicorn in a thread; wait until it answers."""
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "gateway failed to start"
        assert time.monotonic() < deadline, "gateway did not start within 30 s"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{settings.gateway_port}"
    return RunningGateway(url=url, settings=settings, server=server, thread=thread)


def stop_gateway(gateway: RunningGateway) -> None:
    gateway.server.should_exit = True
    gateway.thread.join(30)


GatewayFactory = Callable[..., RunningGateway]


def gateway_settings(base: Settings, firebase_keys: FirebaseKeys, **overrides: Any) -> Settings:
    """Settings for one gateway under test: its own port and topic, the local JWKS."""
    values: dict[str, Any] = {
        "gateway_port": free_port(),
        "metrics_port": free_port(),
        "firebase_project_id": FIREBASE_PROJECT,
        "firebase_jwks_url": firebase_keys.url,
        "gateway_relay_interval_seconds": 0,  # off unless a test is about the relay
        "upload_sweep_interval_seconds": 0,  # off: a sweep is global, tests run their own
    }
    values.update(overrides)
    if "gateway_jobs_topic" not in values:
        values["gateway_jobs_topic"] = make_jobs_topic(base)
    return base.model_copy(update=values)


@pytest.fixture
def gateway_factory(settings: Settings, firebase_keys: FirebaseKeys) -> Iterator[GatewayFactory]:
    """``gateway_factory(**setting_overrides)``: a fresh gateway for one test."""
    started: list[RunningGateway] = []

    def start(**overrides: Any) -> RunningGateway:
        gateway = start_gateway(gateway_settings(settings, firebase_keys, **overrides))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        stop_gateway(gateway)


@pytest.fixture(scope="module")
def gateway(settings: Settings, firebase_keys: FirebaseKeys) -> Iterator[RunningGateway]:
    """One gateway shared by a test module, with the default limits."""
    running = start_gateway(gateway_settings(settings, firebase_keys))
    yield running
    stop_gateway(running)


def new_customer(pool: Pool, name: str = "test") -> Customer:
    """A committed customer with an API key and a Firebase uid of its own."""
    uid = f"uid-{time.monotonic_ns()}"
    with transaction(pool) as conn:
        customer_id, api_key = create_customer(conn, name, firebase_uid=uid)
    return Customer(customer_id=customer_id, api_key=api_key, firebase_uid=uid)


@pytest.fixture
def customer(db_pool: Pool) -> Customer:
    return new_customer(db_pool, "alice")


@pytest.fixture
def other_customer(db_pool: Pool) -> Customer:
    return new_customer(db_pool, "mallory")
