"""Named points in the stage contract where a test can make the worker die.

Fault tests prove that a crash at any step leads to the same end state; they start a
worker with ``VI_FAILPOINTS=after_upsert`` (for example) and the worker kills itself
with SIGKILL the first time it passes that point, exactly as an OOM kill would.
Unset, a failpoint is a set lookup and nothing more.
"""

from __future__ import annotations

import os
import signal
from enum import StrEnum


class Failpoint(StrEnum):
    AFTER_HANDLER = "after_handler"
    AFTER_UPSERT = "after_upsert"
    AFTER_PRODUCE = "after_produce"
    BEFORE_COMMIT = "before_commit"


class Failpoints:
    """The failpoints armed in this process."""

    def __init__(self, spec: str) -> None:
        self._armed = {Failpoint(name.strip()) for name in spec.split(",") if name.strip()}

    def hit(self, point: Failpoint) -> None:
        """Kill this process at once if ``point`` is armed."""
        if point in self._armed:
            os.kill(os.getpid(), signal.SIGKILL)
