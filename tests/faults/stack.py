"""A private copy of the whole platform, run by the local stack script exactly as ``make up``
runs it, in a state folder and on ports of its own.

Its own PostgreSQL, Kafka and registry, so the soak can restart them without touching the
test session's shared services; every process under ``deploy/local/supervise.sh``, so a
SIGKILLed worker comes back as it would under ``make up``. The stage workers reach the
broker through a loopback proxy (the broker advertises the proxy on a listener of its
own), so the soak can slow or cut their connections; the gateway and the cost aggregator
talk to the broker directly. Installs (Kafka's jars, Apicurio) are shared with the
checkout's own state folder, so a private stack downloads nothing twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.network import free_port, free_span
from tests.fixtures.platform import supervised_child
from vidinsight.settings import REPO_ROOT

STACK = REPO_ROOT / "deploy" / "local" / "stack.sh"
INFRASTRUCTURE = ("postgres", "kafka", "registry", "s3")
# Metrics ports from VI_METRICS_PORT_BASE: seven workers, costs, gateway, then the replicas.
METRICS_PORTS = 16


@dataclass
class StackPorts:
    """Every port the private stack listens on, chosen free when it is made."""

    postgres: int = field(default_factory=free_port)
    kafka: int = field(default_factory=free_port)
    kafka_controller: int = field(default_factory=free_port)
    kafka_proxied: int = field(default_factory=free_port)
    kafka_proxy: int = field(default_factory=free_port)
    registry: int = field(default_factory=free_port)
    s3: int = field(default_factory=free_port)
    gateway: int = field(default_factory=free_port)
    prometheus: int = field(default_factory=free_port)
    metrics_base: int = field(default_factory=lambda: free_span(METRICS_PORTS))


@dataclass
class PrivateStack:
    """The stack script aimed at one state folder and set of ports."""

    state_dir: Path
    replicas: dict[str, int]
    platform_env: dict[str, str]
    ports: StackPorts = field(default_factory=StackPorts)

    @property
    def env(self) -> dict[str, str]:
        shared = REPO_ROOT / ".state"
        return {
            **os.environ,
            "VI_STATE_DIR": str(self.state_dir),
            "VI_OPT_DIR": os.environ.get("VI_OPT_DIR", str(shared / "opt")),
            "VI_MAVEN_REPO": os.environ.get("VI_MAVEN_REPO", str(shared / "cache" / "m2")),
            "VI_POSTGRES_PORT": str(self.ports.postgres),
            "VI_KAFKA_PORT": str(self.ports.kafka),
            "VI_KAFKA_CONTROLLER_PORT": str(self.ports.kafka_controller),
            "VI_KAFKA_PROXIED_PORT": str(self.ports.kafka_proxied),
            "VI_KAFKA_PROXY_PORT": str(self.ports.kafka_proxy),
            "VI_WORKER_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports.kafka_proxy}",
            "VI_REGISTRY_PORT": str(self.ports.registry),
            "VI_S3_PORT": str(self.ports.s3),
            "VI_GATEWAY_PORT": str(self.ports.gateway),
            "VI_METRICS_PORT_BASE": str(self.ports.metrics_base),
            "VI_STAGE_REPLICAS": ",".join(f"{s}={n}" for s, n in self.replicas.items()),
            "VI_PROMETHEUS_PORT": str(self.ports.prometheus),
            # The stack's own addresses, not those of the session this runs inside.
            "VI_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports.kafka}",
            "VI_REGISTRY_URL": f"http://127.0.0.1:{self.ports.registry}/apis/ccompat/v7",
            "VI_DATABASE_URL": self.database_url,
            **self.platform_env,
        }

    @property
    def database_url(self) -> str:
        return f"postgresql://vidinsight:vidinsight@127.0.0.1:{self.ports.postgres}/vidinsight"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.registry}/apis/ccompat/v7"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def run(self, *args: str, **extra_env: str) -> str:
        """``stack.sh ARGS`` for this stack; its output (a failure raises with the output)."""
        done = subprocess.run(
            [str(STACK), *args],
            env={**self.env, **extra_env},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def up(self) -> None:
        self.run("up")

    def down(self) -> None:
        """Stop every process by its pid file (also after a failed run)."""
        if self.state_dir.exists():
            self.run("down")

    def wipe(self) -> None:
        """Stop everything and forget every byte, for a run that starts from nothing."""
        self.down()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def services(self) -> list[str]:
        return self.run("services").split()

    def platform_services(self) -> list[str]:
        return [s for s in self.services() if s not in INFRASTRUCTURE and s != "prometheus"]

    def workers(self) -> list[str]:
        return [s for s in self.services() if s.startswith("worker-")]

    def child_pid(self, service: str) -> int | None:
        """The running process of ``service`` (None while its supervisor restarts it)."""
        return supervised_child(self.state_dir / "run", service)

    def kill(self, service: str) -> int | None:
        """SIGKILL the service's process (its supervisor starts it again); the pid killed."""
        pid = self.child_pid(service)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
        return pid

    def restart(self, service: str, **extra_env: str) -> None:
        """Stop ``service`` by its pid file and start it again, with ``extra_env`` if given."""
        self.run("restart", service, **extra_env)

    def stop(self, service: str) -> None:
        self.run("stop", service)

    def start(self, service: str, **extra_env: str) -> None:
        self.run("start", service, **extra_env)

    def describe(self) -> dict[str, object]:
        """What the report says about how the platform ran."""
        return {
            "replicas": self.replicas,
            "services": self.platform_services(),
            "settings": {k: v for k, v in self.platform_env.items() if "KEY" not in k},
        }

    def log_lines(self) -> list[tuple[str, str]]:
        """Every line of every platform log: (service, line)."""
        lines: list[tuple[str, str]] = []
        for path in sorted(self.log_dir.glob("*.log*")):
            service = path.name.split(".log")[0]
            if service in (*INFRASTRUCTURE, "prometheus") or service == "platform-setup":
                continue
            lines += [(service, line) for line in path.read_text(errors="replace").splitlines()]
        return lines
