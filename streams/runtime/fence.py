"""The fence between a partition's owner and the work it handed to a thread.

When a partition is revoked or lost, or the worker shuts down, the fence is raised:
the thread stops before its next effect (transaction, produce) and its result is
dropped, so a worker that no longer owns a partition never writes for it again.
"""

from __future__ import annotations

import threading


class Abandoned(Exception):
    """Raised inside a worker thread when its partition was taken away."""


class Fence:
    def __init__(self) -> None:
        self._raised = threading.Event()

    def raise_fence(self) -> None:
        self._raised.set()

    @property
    def raised(self) -> bool:
        return self._raised.is_set()

    def check(self) -> None:
        """Stop the caller if the partition is no longer ours."""
        if self._raised.is_set():
            raise Abandoned()

    def sleep(self, seconds: float) -> None:
        """Back off for ``seconds``, waking early (and stopping) if the fence goes up."""
        if self._raised.wait(seconds):
            raise Abandoned()
