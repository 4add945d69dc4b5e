"""The local stack script (deploy/local/stack.sh): health, clear errors, and data kept over down/up.

The tests that could disturb the shared stack (down, up, a taken port) run against a
private stack: a fresh state directory in /tmp and free ports of their own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from vidinsight.settings import REPO_ROOT, Settings

STACK = REPO_ROOT / "deploy" / "local" / "stack.sh"
SERVICES = ("postgres", "kafka", "registry")
LOCAL_STACK = os.environ.get("VI_LOCAL_STACK", "1") != "0"


def stack(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run stack.sh with ``args`` and return the finished process (output captured)."""
    return subprocess.run(
        [str(STACK), *args],
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def private_state_dir() -> Path:
    """A fresh state directory that the postgres OS user can reach (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="vi-stack-test-"))
    path.chmod(0o755)
    return path


def private_env(state_dir: Path, settings: Settings) -> dict[str, str]:
    """The environment of a private stack: its own state directory and free ports."""
    env = dict(os.environ)
    env.update(
        VI_STATE_DIR=str(state_dir),
        VI_POSTGRES_PORT=str(free_port()),
        VI_KAFKA_PORT=str(free_port()),
        VI_KAFKA_CONTROLLER_PORT=str(free_port()),
        VI_REGISTRY_PORT=str(free_port()),
        VI_STACK_PLATFORM="0",  # the infrastructure alone: its workers would need ports too
    )
    shared_maven_repo = settings.state_dir / "cache" / "m2"
    if shared_maven_repo.is_dir():
        # The jars are already downloaded once; a private stack copies them from there.
        env["VI_MAVEN_REPO"] = str(shared_maven_repo)
    return env


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.integration
@pytest.mark.skipif(not LOCAL_STACK, reason="VI_LOCAL_STACK=0: the tests use external services")
def test_status_reports_every_service_healthy() -> None:
    # `make test` runs the infrastructure only; the platform's workers are `make up`'s.
    states = {}
    for service in SERVICES:
        result = stack("status", service, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        states.update({line.split()[0]: line.split()[1] for line in result.stdout.splitlines()})
    assert states == dict.fromkeys(SERVICES, "healthy")


@pytest.mark.parametrize(
    ("service", "port_var"),
    [
        ("postgres", "VI_POSTGRES_PORT"),
        ("kafka", "VI_KAFKA_PORT"),
        ("kafka", "VI_KAFKA_CONTROLLER_PORT"),
        ("registry", "VI_REGISTRY_PORT"),
    ],
)
def test_taken_port_is_a_one_line_error(service: str, port_var: str, settings: Settings) -> None:
    state_dir = private_state_dir()
    try:
        env = private_env(state_dir, settings)
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen(1)
            taken = squatter.getsockname()[1]
            env[port_var] = str(taken)
            result = stack("start", service, env=env, timeout=120)
        assert result.returncode != 0
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert str(taken) in lines[0]
        assert port_var in lines[0]
        assert "Traceback" not in result.stderr
        assert not list((state_dir / "run").glob("*.pid")), "nothing may start"
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_missing_java_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    # A PATH with every command of the real one except java.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory) / name
            link = bin_dir / name
            if name != "java" and not link.exists() and os.access(target, os.X_OK):
                link.symlink_to(target)
    state_dir = private_state_dir()
    try:
        env = private_env(state_dir, settings)
        env["PATH"] = str(bin_dir)
        env.pop("JAVA_HOME", None)
        result = stack("up", env=env, timeout=120)
        assert result.returncode != 0
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert "java not found" in lines[0]
        assert not list((state_dir / "run").glob("*.pid")), "nothing may start"
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_full_disk_is_a_clear_error(settings: Settings) -> None:
    state_dir = private_state_dir()
    try:
        env = private_env(state_dir, settings)
        env["VI_MIN_FREE_GIB"] = str(1 << 30)  # more than any disk has
        result = stack("up", env=env, timeout=60)
        assert result.returncode != 0
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert "free" in lines[0] and "GiB" in lines[0]
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@dataclass
class PrivateStack:
    env: dict[str, str]
    state_dir: Path

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['VI_KAFKA_PORT']}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.env['VI_REGISTRY_PORT']}/apis/ccompat/v7"

    @property
    def database_url(self) -> str:
        port = self.env["VI_POSTGRES_PORT"]
        return f"postgresql://vidinsight:vidinsight@127.0.0.1:{port}/vidinsight"


@pytest.fixture
def private_stack(settings: Settings) -> Iterator[PrivateStack]:
    """A second, complete stack on free ports in a fresh state directory; removed afterwards."""
    state_dir = private_state_dir()
    env = private_env(state_dir, settings)
    try:
        yield PrivateStack(env=env, state_dir=state_dir)
    finally:
        stack("down", env=env, timeout=180)
        shutil.rmtree(state_dir, ignore_errors=True)


def port_open(port: str) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", int(port))) == 0


@pytest.mark.integration
def test_down_then_up_keeps_the_data(private_stack: PrivateStack) -> None:
    env = private_stack.env
    first = stack("up", env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr

    # A second up leaves the healthy services alone and takes seconds.
    began = time.monotonic()
    again = stack("up", env=env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - began < 15
    assert again.stdout.count(": running (pid") == len(SERVICES)

    # Data in each service: a topic, a schema, a row.
    topic = f"stack.test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": private_stack.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(30)
    subject = f"stack-test-{uuid.uuid4().hex[:8]}-value"
    schema = '{"type":"record","name":"StackTest","fields":[{"name":"a","type":"string"}]}'
    registered = httpx.post(
        f"{private_stack.registry_url}/subjects/{subject}/versions",
        json={"schema": schema},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=30,
    )
    registered.raise_for_status()
    schema_id = registered.json()["id"]
    compatibility = httpx.get(f"{private_stack.registry_url}/config", timeout=30)
    assert compatibility.json()["compatibilityLevel"] == "BACKWARD"
    with psycopg.connect(private_stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE stack_test (note text)")
        conn.execute("INSERT INTO stack_test VALUES ('kept')")
    cluster_id = (private_stack.state_dir / "data" / "kafka.cluster-id").read_text()

    down = stack("down", env=env, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not list((private_stack.state_dir / "run").glob("*.pid"))
    for var in ("VI_POSTGRES_PORT", "VI_KAFKA_PORT", "VI_REGISTRY_PORT"):
        assert not port_open(env[var]), f"{var} still served after down"
    status = stack("status", env=env, timeout=60)
    assert status.returncode != 0
    assert status.stdout.count("stopped") == len(SERVICES)

    up = stack("up", env=env, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "initialising" not in up.stdout and "formatting" not in up.stdout
    assert (private_stack.state_dir / "data" / "kafka.cluster-id").read_text() == cluster_id

    metadata = admin.list_topics(timeout=30)
    assert len(metadata.topics[topic].partitions) == 2
    latest = httpx.get(
        f"{private_stack.registry_url}/subjects/{subject}/versions/latest", timeout=30
    )
    latest.raise_for_status()
    assert latest.json()["id"] == schema_id
    with psycopg.connect(private_stack.database_url) as conn:
        rows = conn.execute("SELECT note FROM stack_test").fetchall()
    assert rows == [("kept",)]
