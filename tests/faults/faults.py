"""Faults at random times: the schedule a seed makes, and the threads that inject it.

Every fault is drawn from one ``random.Random(seed)``, so a report's seed gives back the
same kinds, targets and times. Each fault runs on a thread of its own at its time and,
if it has a length, is undone by that thread when its time is up; restarts through the
stack script wait for its lock, so the report keeps the times as they really were.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.llm_server import LlmServer
from tests.faults.proxy import TcpProxy
from tests.faults.stack import PrivateStack

# The busy stage whose one worker gets a full disk as its scratch space.
DISK_FULL_TARGET = "worker-preprocess-2"


@dataclass
class Fault:
    """One fault: what, to whom, when (seconds after the run's start) and for how long."""

    kind: str
    at: float
    seconds: float = 0.0
    target: str = ""
    began: float | None = None  # seconds after the run's start, as it happened
    ended: float | None = None
    detail: str = ""

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "planned_at": round(self.at, 1),
            "began": None if self.began is None else round(self.began, 1),
            "ended": None if self.ended is None else round(self.ended, 1),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class FaultPlan:
    """How many of each fault a profile injects, and in which window."""

    window: tuple[float, float]  # seconds after the start
    worker_kills: int
    registry_down_seconds: float
    llm_errors_seconds: float
    llm_hang_seconds: float
    latency_seconds: float
    latency_ms: int
    cut_seconds: float
    disk_full_seconds: float
    gateway_kill_window: tuple[float, float]


def schedule(plan: FaultPlan, seed: int, workers: list[str]) -> list[Fault]:
    """The faults of one run, in time order."""
    rng = random.Random(seed)
    start, end = plan.window

    def when() -> float:
        return rng.uniform(start, end)

    faults = [
        Fault("kill_worker", when(), target=rng.choice(workers)) for _ in range(plan.worker_kills)
    ]
    faults += [
        Fault("kill_gateway", rng.uniform(*plan.gateway_kill_window), target="gateway"),
        Fault("kill_costs", when(), target="costs"),
        Fault("restart_kafka", when(), target="kafka"),
        Fault("restart_postgres", when(), target="postgres"),
        Fault("registry_down", when(), plan.registry_down_seconds, "registry"),
        Fault("llm_errors", when(), plan.llm_errors_seconds, "llm"),
        Fault(
            "broker_latency",
            when(),
            plan.latency_seconds,
            "workers",
            detail=f"{plan.latency_ms} ms each way",
        ),
        Fault("broker_cut", when(), plan.cut_seconds, "workers"),
        Fault("disk_full", when(), plan.disk_full_seconds, DISK_FULL_TARGET),
    ]
    return sorted(faults, key=lambda fault: fault.at)


@dataclass
class Injector:
    """Applies a schedule against a running stack: each fault on a thread of its own, at its
    time (restarts through the stack script still take its lock one at a time)."""

    stack: PrivateStack
    llm: LlmServer
    proxy: TcpProxy
    faults: list[Fault]
    scratch: Path  # where the full disk is mounted
    plan: FaultPlan
    started: float = field(default_factory=time.monotonic)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.started = time.monotonic()
        for fault in self.faults:
            thread = threading.Thread(
                target=self._run, args=(fault,), name=f"fault-{fault.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        """Wait for every fault to be applied and undone; past ``timeout``, cut the waits
        short (what was applied is still undone)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def now(self) -> float:
        return time.monotonic() - self.started

    def _run(self, fault: Fault) -> None:
        if self._stop.wait(max(0.0, fault.at - self.now())):
            return
        fault.began = self.now()
        undo = self._guarded(fault, lambda: getattr(self, f"_{fault.kind}")(fault))
        if callable(undo):
            self._stop.wait(fault.seconds)
            self._guarded(fault, undo)
        fault.ended = self.now()

    def _guarded(self, fault: Fault, action: Callable[[], Any]) -> Any:
        """A fault the harness could not inject is a harness error, reported, not raised."""
        try:
            return action()
        except Exception as exc:
            self.errors.append(f"{fault.kind} {fault.target}: {exc}")
            return None

    # --- one method per kind: apply it, and return the undo of a fault with a length.

    def _kill_worker(self, fault: Fault) -> None:
        pid = self.stack.kill(fault.target)
        fault.detail = f"pid {pid}" if pid else "between restarts: nothing to kill"

    _kill_gateway = _kill_worker
    _kill_costs = _kill_worker

    def _restart_kafka(self, fault: Fault) -> None:
        self.stack.restart(fault.target)

    _restart_postgres = _restart_kafka

    def _registry_down(self, fault: Fault) -> Callable[[], None]:
        self.stack.stop(fault.target)
        return lambda: self.stack.start(fault.target)

    def _llm_errors(self, fault: Fault) -> Callable[[], None]:
        """429 for the first half, 500 for the second, then no answer at all for a while."""
        self.llm.set_mode("429")
        half = fault.seconds / 2
        threading.Timer(half, self.llm.set_mode, args=("500",)).start()
        hang = self.plan.llm_hang_seconds
        fault.detail = f"429 then 500, then no answer for {hang:.0f} s"

        def hang_then_recover() -> None:
            self.llm.set_mode("hang")
            threading.Timer(hang, self.llm.set_mode, args=("ok",)).start()

        return hang_then_recover

    def _broker_latency(self, fault: Fault) -> Callable[[], None]:
        self.proxy.set_latency(self.plan.latency_ms / 1000)
        return lambda: self.proxy.set_latency(0.0)

    def _broker_cut(self, fault: Fault) -> Callable[[], None]:
        """The proxy reopens by itself; waiting out the cut dates its end in the report."""
        self.proxy.cut(fault.seconds)
        return lambda: None

    def _disk_full(self, fault: Fault) -> Callable[[], None]:
        """The worker starts again with its scratch space on a small tmpfs, filled up."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.scratch)],
            check=True,
            capture_output=True,
        )
        with (self.scratch / "filler").open("wb") as filler, suppress(OSError):
            filler.write(os.urandom(2 * 1024 * 1024))  # more than fits: the disk is full
        self.stack.restart(fault.target, TMPDIR=str(self.scratch))

        def restore() -> None:
            try:
                self.stack.restart(fault.target)
            finally:
                subprocess.run(["umount", "-l", str(self.scratch)], check=True, capture_output=True)

        return restore
