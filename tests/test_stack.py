"""The local stack script (deploy/local/stack.sh): health, clear errors, data kept over
down/up, and supervision (deploy/local/supervise.sh restarts a process that dies).

The tests that could disturb the shared stack (down, up, a taken port) run against a
private stack: a fresh state directory in /tmp and free ports of their own.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
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

from tests.fixtures.waiting import wait_until
from vidinsight.settings import REPO_ROOT, Settings

STACK = REPO_ROOT / "deploy" / "local" / "stack.sh"
SUPERVISE = REPO_ROOT / "deploy" / "local" / "supervise.sh"
SERVICES = ("postgres", "kafka", "registry", "s3")
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
        VI_S3_PORT=str(free_port()),
        VI_STACK_PLATFORM="0",  # the infrastructure alone: its workers would need ports too
    )
    shared_maven_repo = settings.state_dir / "cache" / "m2"
    if shared_maven_repo.is_dir():
        # The jars are already downloaded once; a private stack copies them from there.
        env["VI_MAVEN_REPO"] = str(shared_maven_repo)
    shared_opt_dir = settings.state_dir / "opt"
    if shared_opt_dir.is_dir():
        # ...and the broker, registry and object store installed once: a private stack
        # runs those.
        env["VI_OPT_DIR"] = str(shared_opt_dir)
    return env


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(") ", 1)[1].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (Z) or being torn down (X)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (stack.sh gives each service a session of its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and fields[3] == str(sid) and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def text_of(path: Path) -> str:
    """A small state file's content, stripped; "" while it does not exist yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def pid_in(path: Path) -> int:
    """The pid of a "PID START" file of the state directory (run/<svc>.pid or .child)."""
    return int(path.read_text().split()[0])


def status_of(service: str, env: dict[str, str]) -> str:
    """stack.sh status's line for ``service``."""
    result = stack("status", service, env=env, timeout=60)
    return result.stdout.strip()


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


def test_a_zombie_is_reported_dead(settings: Settings) -> None:
    # A process that has exited but is not reaped yet keeps its /proc entry and its start
    # time (state Z): status must call the service stopped, and stop must not wait on it.
    state_dir = private_state_dir()
    zombie = subprocess.Popen(["true"])
    try:
        wait_until(lambda: (stat_fields(zombie.pid) or ["?"])[0] == "Z", 10, "a zombie")
        fields = stat_fields(zombie.pid)
        assert fields is not None
        env = private_env(state_dir, settings)
        (state_dir / "run").mkdir()
        (state_dir / "run" / "postgres.pid").write_text(f"{zombie.pid} {fields[19]}\n")

        status = stack("status", "postgres", env=env, timeout=60)
        assert status.returncode == 1
        assert status.stdout.split() == ["postgres", "stopped"]
        stop = stack("stop", "postgres", env=env, timeout=60)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "not running" in stop.stdout
        assert not (state_dir / "run" / "postgres.pid").exists()
    finally:
        zombie.wait()
        shutil.rmtree(state_dir, ignore_errors=True)


def sourced(code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run bash ``code`` after sourcing stack.sh (which then defines its services and
    functions but runs no command), with no VI_* variable set but ``variables``: what the
    script would do, without starting anything."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VI_")}
    env.update(variables)
    return subprocess.run(
        ["bash", "-c", f'source "$1"; {code}', "bash", str(STACK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def kafka_config(**variables: str) -> dict[str, str]:
    """The broker's server.properties as stack.sh renders it for ``variables``."""
    result = sourced("render_kafka_config", **variables)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_kafka_gets_a_proxied_listener_only_when_asked(tmp_path: Path) -> None:
    ports = {
        "VI_STATE_DIR": str(tmp_path),
        "VI_KAFKA_PORT": "19092",
        "VI_KAFKA_CONTROLLER_PORT": "19093",
    }
    plain = kafka_config(**ports)
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert plain["advertised.listeners"] == plain["listeners"]
    assert plain["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert plain["log.dirs"] == str(tmp_path / "data" / "kafka")
    assert [value for value in plain.values() if "@" in value] == [], "a marker left unfilled"

    # The proxy listens on 19094 and forwards to the broker's PROXIED listener on 19095;
    # the broker advertises the proxy, so clients that bootstrap there stay behind it.
    proxied = kafka_config(**ports, VI_KAFKA_PROXIED_PORT="19095", VI_KAFKA_PROXY_PORT="19094")
    assert proxied["listeners"] == plain["listeners"] + ",PROXIED://127.0.0.1:19095"
    assert proxied["advertised.listeners"] == plain["listeners"] + ",PROXIED://127.0.0.1:19094"
    assert proxied["listener.security.protocol.map"].endswith(",PROXIED:PLAINTEXT")
    changed = {key for key in proxied.keys() | plain.keys() if proxied.get(key) != plain.get(key)}
    assert changed == {"listeners", "advertised.listeners", "listener.security.protocol.map"}


def test_one_proxy_port_without_the_other_is_a_one_line_error(settings: Settings) -> None:
    state_dir = private_state_dir()
    try:
        env = private_env(state_dir, settings)
        env["VI_KAFKA_PROXIED_PORT"] = str(free_port())
        result = stack("start", "kafka", env=env, timeout=60)
        assert result.returncode != 0
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert "VI_KAFKA_PROXY_PORT" in lines[0]
        assert not list((state_dir / "run").glob("*.pid")), "nothing may start"
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


# Each platform process as its start function would spawn it: service, metrics port,
# bootstrap, command.
PLATFORM_STARTS = """
spawn() { printf '%s %s %s %s\\n' "$1" "$VI_METRICS_PORT" "$VI_KAFKA_BOOTSTRAP" "${*:3}"; }
for svc in "${SERVICES[@]}"; do
    case "$svc" in worker-* | costs | gateway) "start_${svc//-/_}" ;; esac
done
"""


def platform_starts(**variables: str) -> list[tuple[str, int, str, str]]:
    """(service, metrics port, Kafka bootstrap, vidinsight command), in the stack's order."""
    result = sourced(PLATFORM_STARTS, **variables)
    assert result.returncode == 0, result.stderr
    rows = [line.split(" ", 3) for line in result.stdout.splitlines()]
    return [(svc, int(port), bootstrap, command) for svc, port, bootstrap, command in rows]


FIXED_PORTS = {
    "gateway": 9109,
    "worker-ingest": 9101,
    "worker-preprocess": 9102,
    "worker-scenes": 9103,
    "worker-transcribe": 9104,
    "worker-analyse": 9105,
    "worker-synthesise": 9106,
    "worker-notify": 9107,
    "costs": 9108,
}


def test_one_worker_per_stage_by_default(tmp_path: Path) -> None:
    starts = platform_starts(VI_STATE_DIR=str(tmp_path))
    assert {svc: port for svc, port, _, _ in starts} == FIXED_PORTS
    assert {bootstrap for _, _, bootstrap, _ in starts} == {"127.0.0.1:9092"}


def test_stage_replicas_take_ports_after_the_gateways(tmp_path: Path) -> None:
    starts = platform_starts(
        VI_STATE_DIR=str(tmp_path),
        VI_STAGE_REPLICAS="preprocess=2, transcribe=3",
        VI_WORKER_KAFKA_BOOTSTRAP="127.0.0.1:19094",
    )
    services = [svc for svc, _, _, _ in starts]
    assert services == [
        "gateway",
        "worker-ingest",
        "worker-preprocess",
        "worker-preprocess-2",
        "worker-scenes",
        "worker-transcribe",
        "worker-transcribe-2",
        "worker-transcribe-3",
        "worker-analyse",
        "worker-synthesise",
        "worker-notify",
        "costs",
    ]
    ports = {svc: port for svc, port, _, _ in starts}
    replicas = {
        "worker-preprocess-2": 9110,
        "worker-transcribe-2": 9111,
        "worker-transcribe-3": 9112,
    }
    assert ports == FIXED_PORTS | replicas
    commands = {svc: command for svc, _, _, command in starts}
    assert commands["worker-transcribe-3"] == commands["worker-transcribe"]
    assert commands["worker-transcribe"].endswith("vidinsight worker transcribe")
    # Only the stage workers go through the proxy; the gateway and the aggregator do not.
    bootstraps = {svc: bootstrap for svc, _, bootstrap, _ in starts}
    assert {bootstraps["gateway"], bootstraps["costs"]} == {"127.0.0.1:9092"}
    workers = {bootstraps[svc] for svc in services if svc.startswith("worker-")}
    assert workers == {"127.0.0.1:19094"}


@pytest.mark.parametrize("replicas", ["preprocess=0", "preprocess", "transcode=2"])
def test_a_wrong_stage_replicas_entry_is_a_one_line_error(replicas: str, tmp_path: Path) -> None:
    result = sourced("true", VI_STATE_DIR=str(tmp_path), VI_STAGE_REPLICAS=replicas)
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "VI_STAGE_REPLICAS" in lines[0] and replicas.split("=")[0] in lines[0]


def supervise(run_dir: Path, script: str) -> subprocess.Popen[bytes]:
    """supervise.sh keeping ``sh -c script`` running as the service "demo", in a session of
    its own as spawn starts it; its output goes to run_dir/demo.log."""
    with (run_dir / "demo.log").open("ab") as log:
        return subprocess.Popen(
            ["bash", str(SUPERVISE), "demo", str(run_dir), "TERM", "sh", "-c", script],
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def end_supervision(supervisor: subprocess.Popen[bytes]) -> None:
    """Teardown: KILL whatever is left of the supervisor's process group."""
    if supervisor.poll() is None:
        os.killpg(supervisor.pid, signal.SIGKILL)
    supervisor.wait(30)


def test_supervisor_restarts_a_child_that_exits_70_and_term_stops_both(tmp_path: Path) -> None:
    # The first run exits 70, as a stage worker does when it judges itself hung; the
    # second stays up.
    supervisor = supervise(tmp_path, "if [ -e once ]; then exec sleep 300; fi; touch once; exit 70")
    restarts, child_file = tmp_path / "demo.restarts", tmp_path / "demo.child"
    try:

        def restarted_once() -> bool:
            if not child_file.exists() or text_of(restarts) != "1":
                return False
            return alive(pid_in(child_file))

        wait_until(restarted_once, 20, "the child restarted once")
        child = pid_in(child_file)
        assert "demo exited with code 70" in (tmp_path / "demo.log").read_text()

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(20) == 0
        assert not alive(child)
        assert not child_file.exists()
        assert text_of(restarts) == "1", "nothing is restarted once TERM came"
        assert session_members(supervisor.pid) == []
    finally:
        end_supervision(supervisor)


def test_supervisor_backs_off_and_term_cuts_the_backoff_short(tmp_path: Path) -> None:
    supervisor = supervise(tmp_path, "exit 70")
    restarts = tmp_path / "demo.restarts"
    try:
        # Restarts after 1 s and 2 s; the third exit starts a backoff of 4 s. The count
        # is written before the line that announces the backoff: wait for the line.
        wait_until(lambda: "restart 3 in" in text_of(tmp_path / "demo.log"), 30, "3 restarts")
        assert text_of(restarts) == "3"
        log = (tmp_path / "demo.log").read_text()
        for number, delay in ((1, 1), (2, 2), (3, 4)):
            assert f"restart {number} in {delay}s" in log, log

        began = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(20) == 0
        assert time.monotonic() - began < 3, "TERM must end the backoff, not wait it out"
        assert text_of(restarts) == "3"
        assert "supervision ends" in (tmp_path / "demo.log").read_text()
    finally:
        end_supervision(supervisor)


# A small service of the test's own: python's http.server, healthy once its port answers.
WEB_SERVICE = """
add_service web
start_web() {{
    spawn web "$STATE_DIR" {python} -m http.server --bind 127.0.0.1 "$VI_TEST_WEB_PORT"
}}
health_web() {{ port_in_use "$VI_TEST_WEB_PORT"; }}
port_vars_web() {{ echo VI_TEST_WEB_PORT; }}
"""


def test_killed_service_is_restarted_and_down_leaves_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    services_dir = tmp_path / "services.d"
    services_dir.mkdir()
    (services_dir / "web.sh").write_text(WEB_SERVICE.format(python=shlex.quote(sys.executable)))
    state_dir = private_state_dir()
    env = private_env(state_dir, settings)
    port = str(free_port())
    env.update(VI_STACK_SERVICES_DIR=str(services_dir), VI_TEST_WEB_PORT=port)
    run = state_dir / "run"
    try:
        started = stack("start", "web", env=env, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        supervisor, first = pid_in(run / "web.pid"), pid_in(run / "web.child")
        os.kill(first, signal.SIGKILL)

        # Back without any command: a new process, healthy, one restart counted.
        def back() -> bool:
            line = status_of("web", env)
            healthy = line.split()[1] == "healthy"
            return healthy and f"pid {first}," not in line and "restarts 1" in line

        wait_until(back, 20, "web restarted and healthy")
        second = pid_in(run / "web.child")
        assert second != first and alive(second)
        assert pid_in(run / "web.pid") == supervisor
        httpx.get(f"http://127.0.0.1:{port}/", timeout=10).raise_for_status()

        down = stack("down", env=env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert [pid for pid in (supervisor, first, second) if alive(pid)] == []
        assert session_members(supervisor) == []
        assert not port_open(port)
        assert not list(run.glob("web.*"))
        assert status_of("web", env).split() == ["web", "stopped"]
    finally:
        stack("down", env=env, timeout=120)
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

    # The registry killed as an OOM kill would: its supervisor starts it again unasked.
    run = private_stack.state_dir / "run"
    killed = pid_in(run / "registry.child")
    os.kill(killed, signal.SIGKILL)

    def registry_back() -> bool:
        line = status_of("registry", env)
        return line.split()[1] == "healthy" and "restarts 1" in line

    wait_until(registry_back, 180, "the registry restarted and healthy")
    assert pid_in(run / "registry.child") != killed
    restarted = httpx.get(f"{private_stack.registry_url}/schemas/ids/{schema_id}", timeout=30)
    restarted.raise_for_status()

    supervisors = [pid_in(path) for path in run.glob("*.pid")]
    children = [pid_in(path) for path in run.glob("*.child")]
    assert len(supervisors) == len(children) == len(SERVICES)
    down = stack("down", env=env, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not list(run.glob("*.pid"))
    assert [pid for pid in supervisors + children if alive(pid)] == [], "down left a process"
    assert [sid for sid in supervisors if session_members(sid)] == []
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
