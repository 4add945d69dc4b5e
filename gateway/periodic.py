"""A piece of background work repeated on a thread of its own: readiness probes, job gauges,
the outbox relay.

Requests answer from the work's last result instead of doing the work themselves, so a
burst of requests (or of scrapes) costs PostgreSQL, Kafka and the registry nothing extra.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``work`` every ``interval_seconds`` (the first time after ``first_after``)."""

    def __init__(
        self, name: str, interval_seconds: float, work: Callable[[], object], first_after: float = 0
    ) -> None:
        self._interval = interval_seconds
        self._work = work
        self._first_after = first_after
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        delay = self._first_after
        while not self._stopping.wait(delay):
            try:
                self._work()
            except Exception:
                log.exception("%s failed; trying again next interval", self._thread.name)
            delay = self._interval
