"""CPU time of the platform's own work, as a metric (decision 0011: never a bill).

Here, not in the stage runtime, because the inference layer measures its local model
calls too and must not reach up into ``streams``.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter

CPU_SECONDS = Counter(
    "vidinsight_stage_cpu_seconds_total",
    "CPU seconds of a stage's own work (this process and the tools it ran, e.g. FFmpeg),"
    " by provider and model; measured, so never billed: cost events price the work by"
    " its input.",
    ["stage", "provider", "model"],
)


def _process_cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its children that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _CpuShares:
    """The process's CPU time, shared among the steps that are measuring it.

    CPU time can only be read per process (a model's and FFmpeg's threads and processes
    work for the thread that called them), and a worker handles several messages at
    once, so a step's own before-and-after difference would also count its neighbours'
    work. Instead, the time between any two starts or ends of steps is split evenly
    among the steps running then, so the counter adds up to the process's CPU time
    while any step ran, each second counted once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[tuple[str, str, str]] = []
        self._last = _process_cpu_seconds()

    def _settle(self) -> None:
        """Share the CPU time since the last start or end among the running steps."""
        now = _process_cpu_seconds()
        spent, self._last = now - self._last, now
        for labels in self._running:
            CPU_SECONDS.labels(*labels).inc(spent / len(self._running))

    @contextmanager
    def measure(self, stage: str, provider: str, model: str) -> Iterator[None]:
        labels = (stage, provider, model)
        with self._lock:
            self._settle()
            self._running.append(labels)
        try:
            yield
        finally:
            with self._lock:
                self._settle()
                self._running.remove(labels)


# ``with measure_cpu(stage, provider, model):`` counts the block's CPU time in CPU_SECONDS.
measure_cpu = _CpuShares().measure
