"""The platform under measurement: the private stack's services, and their CPU and memory.

The bench starts the services that are not running through ``deploy/local/stack.sh``
(with its own replica counts), waits until every stage's consumer group is made of
those workers (warning when it is not), and meters the process trees the stack
started, so that the figures are of this stack and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.procfs import (
    machine_busy_seconds,
    peak_rss_bytes,
    process_tree,
    reset_peak_rss,
    stat_fields,
    tree_cpu_seconds,
)
from topics.admin import admin_client
from vidinsight.settings import REPO_ROOT, Settings

HEAVY_STAGES = ("preprocess", "scenes", "transcribe")
STACK = REPO_ROOT / "deploy" / "local" / "stack.sh"
INFRASTRUCTURE = ("postgres", "kafka", "registry", "s3")
SAMPLE_SECONDS = 0.5


# -- CPU time and memory of the services ---------------------------------------------------


def service_pids(settings: Settings, services: Sequence[str]) -> dict[str, int]:
    """The pid of each running service, from the stack's pid files (pid and start time)."""
    pids: dict[str, int] = {}
    for service in services:
        try:
            pid_text, started = (settings.state_dir / "run" / f"{service}.pid").read_text().split()
        except (OSError, ValueError):
            continue
        fields = stat_fields(int(pid_text))
        if fields is not None and fields[19] == started:  # the process the stack started
            pids[service] = int(pid_text)
    return pids


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each service's process tree; a service whose process is gone is
    left out, so a crash shows as a warning, not as negative CPU time."""
    return {
        service: tree_cpu_seconds(pid)
        for service, pid in pids.items()
        if stat_fields(pid) is not None
    }


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {service: after[service] - before[service] for service in after if service in before}


def service_of(process: str) -> str:
    """The service a process belongs to: ``worker-transcribe-2`` is a ``worker-transcribe``."""
    name, _, suffix = process.rpartition("-")
    return name if process.startswith("worker-") and suffix.isdigit() else process


@dataclass(frozen=True)
class Usage:
    """What the platform's processes used over one run, with the machine around them."""

    cpu: dict[str, float]  # CPU seconds by process (worker-transcribe-2)
    peak_bytes: dict[str, int]  # peak resident bytes by process tree
    peaks_reset: bool
    infrastructure_cpu_seconds: float
    machine_busy_seconds: float

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def cpu_by_service(self) -> dict[str, float]:
        summed: dict[str, float] = {}
        for process, seconds in self.cpu.items():
            summed[service_of(process)] = summed.get(service_of(process), 0.0) + seconds
        return summed

    def peak_by_service(self) -> dict[str, int]:
        """The largest replica's peak: what one process of the service must be given."""
        peaks: dict[str, int] = {}
        for process, peak in self.peak_bytes.items():
            peaks[service_of(process)] = max(peaks.get(service_of(process), 0), peak)
        return peaks


class Meter:
    """CPU of the platform's processes (and the infrastructure's, and the machine's) from
    its creation to ``stop``, and their peak memory, sampled by a thread in between."""

    def __init__(self, pids: Mapping[str, int], infra: Mapping[str, int]) -> None:
        self._pids, self._infra = dict(pids), dict(infra)
        self._peaks: dict[str, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_done, daemon=True)
        self._reset = all(reset_peak_rss(p) for pid in pids.values() for p in process_tree(pid))
        self._cpu, self._infra_cpu, self._machine = (
            cpu_snapshot(self._pids),
            cpu_snapshot(self._infra),
            machine_busy_seconds(),
        )
        self._thread.start()

    def _sample(self) -> None:
        for process, pid in self._pids.items():
            resident = sum(peak_rss_bytes(p) for p in process_tree(pid))
            self._peaks[process] = max(self._peaks.get(process, 0), resident)

    def _sample_until_done(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> Usage:
        self._done.set()
        self._thread.join()
        self._sample()
        return Usage(
            cpu=cpu_delta(self._cpu, cpu_snapshot(self._pids)),
            peak_bytes=self._peaks,
            peaks_reset=self._reset,
            infrastructure_cpu_seconds=sum(
                cpu_delta(self._infra_cpu, cpu_snapshot(self._infra)).values()
            ),
            machine_busy_seconds=machine_busy_seconds() - self._machine,
        )


# -- the stack -----------------------------------------------------------------------------


def stage_replicas(configured: str, workers: int) -> str:
    """``VI_STAGE_REPLICAS`` with ``workers`` for each heavy stage, other entries kept."""
    entries = dict(e.partition("=")[::2] for e in configured.replace(" ", "").split(",") if e)
    entries.update({stage: str(workers) for stage in HEAVY_STAGES})
    return ",".join(f"{stage}={count}" for stage, count in entries.items())


@dataclass(frozen=True)
class Stack:
    """stack.sh with this run's replicas: every call must name the same services."""

    env: dict[str, str]

    @classmethod
    def with_workers(cls, workers: int) -> Stack:
        env = dict(os.environ)
        env["VI_STAGE_REPLICAS"] = stage_replicas(env.get("VI_STAGE_REPLICAS", ""), workers)
        return cls(env)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), *args], cwd=REPO_ROOT, env=self.env,
            capture_output=True, text=True, check=check,
        )  # fmt: skip

    def platform_services(self) -> list[str]:
        """The pipeline's processes under ``make up``, in start order: the gateway, the
        stage workers with their replicas and the cost aggregator (monitoring such as
        Prometheus is left alone)."""
        listed = self.run("services", check=False)
        if listed.returncode != 0:
            raise SystemExit(f"stack.sh services failed:\n{listed.stderr}")
        names = listed.stdout.split()
        return [s for s in names if s in ("gateway", "costs") or s.startswith("worker-")]

    def start_missing(self, services: Sequence[str]) -> list[str]:
        """Start each service that is not healthy; the ones this run started, in order."""
        started: list[str] = []
        for service in services:
            if self.run("status", service, check=False).returncode == 0:
                continue
            print(f"  starting {service} ...", flush=True)
            done = self.run("start", service, check=False)
            if done.returncode != 0:
                self.stop_started(started)
                raise SystemExit(f"stack.sh start {service} failed:\n{done.stdout}{done.stderr}")
            started.append(service)
        return started

    def stop_started(self, started: Sequence[str]) -> None:
        """Stop what this run started, in reverse order; the rest of the stack is left alone."""
        for service in reversed(started):
            self.run("stop", service, check=False)


def stage_groups(services: Sequence[str]) -> dict[str, int]:
    """Each stage worker's consumer group (``vi.<stage>``) and how many of ``services``
    should be its members."""
    groups: dict[str, int] = {}
    for service in map(service_of, services):
        if service.startswith("worker-"):
            group = f"vi.{service.removeprefix('worker-')}"
            groups[group] = groups.get(group, 0) + 1
    return groups


def group_members(settings: Settings, groups: Sequence[str]) -> dict[str, list[int]]:
    """Each group's members, as the number of partitions assigned to each."""
    admin = admin_client(settings.kafka_bootstrap)
    described = admin.describe_consumer_groups(list(groups), request_timeout=10)
    return {
        group: [len(m.assignment.topic_partitions) for m in future.result().members]
        for group, future in described.items()
    }


def wait_for_assignments(settings: Settings, groups: Mapping[str, int], timeout: float) -> None:
    """Wait until every stage group has its expected members, each assigned partitions;
    warn about groups that differ.

    A job submitted while a freshly started worker is still joining would time the
    join, and a member that is not ours (another engineer's worker, a test) would do
    part of the job out of sight of the CPU accounting.
    """

    def settled(members: Mapping[str, list[int]]) -> bool:
        return all(len(members[g]) == n and min(members[g]) > 0 for g, n in groups.items())

    deadline = time.monotonic() + timeout
    members = group_members(settings, list(groups))
    while time.monotonic() < deadline and not settled(members):
        time.sleep(1)
        members = group_members(settings, list(groups))
    odd = {g: m for g, m in members.items() if len(m) != groups[g] or 0 in m}
    if odd:
        print(f"  WARNING: groups not as this stack runs them (partitions per member): {odd};"
              " idle members (more than partitions) or foreign ones (the figures are"
              " then not of this stack alone)")  # fmt: skip


@dataclass(frozen=True)
class Platform:
    """The running platform: its processes' pids and the infrastructure's."""

    settings: Settings
    services: list[str]

    def meter(self) -> Meter:
        return Meter(service_pids(self.settings, self.services),
                     service_pids(self.settings, INFRASTRUCTURE))  # fmt: skip

    def check_still_up(self) -> None:
        wait_for_assignments(self.settings, stage_groups(self.services), timeout=0)
        down = sorted(set(self.services) - set(service_pids(self.settings, self.services)))
        if down:
            print(f"  WARNING: not running at the end of the run: {down} (see their logs)")
