"""Named points in the stage contract where a test can make the worker die or refuse.

Fault tests prove that a crash at any step leads to the same end state; they start a
worker with ``VI_FAILPOINTS=after_upsert`` (for example) and the worker kills itself
with SIGKILL the first time it passes that point, exactly as an OOM kill would.
``refuse_flagged:DIR`` makes a stage refuse (a permanent failure, so a dead letter) every
message of a customer while the file ``DIR/<stage>-<customer_id>`` exists: a cause an
operator fixes, so that a test can replay the dead letters of any stage of the real
platform. Unset, a failpoint is a set lookup and nothing more.
"""

from __future__ import annotations

import os
import signal
from enum import StrEnum
from pathlib import Path

from vidinsight.errors import PermanentError, Reason


class Failpoint(StrEnum):
    """The crash points, in the order the contract passes them."""

    AFTER_HANDLER = "after_handler"
    AFTER_UPSERT = "after_upsert"
    AFTER_PRODUCE = "after_produce"
    BEFORE_COMMIT = "before_commit"


REFUSE_FLAGGED = "refuse_flagged"


class Failpoints:
    """The failpoints armed in this process (``name`` or ``name:argument``, comma-separated)."""

    def __init__(self, spec: str) -> None:
        self._armed: dict[str, str] = {}
        for entry in spec.split(","):
            name, _, argument = entry.strip().partition(":")
            if name:
                self._armed[name if name == REFUSE_FLAGGED else Failpoint(name)] = argument

    def hit(self, point: Failpoint) -> None:
        """Kill this process at once if ``point`` is armed."""
        if point in self._armed:
            os.kill(os.getpid(), signal.SIGKILL)

    def refuse_flagged(self, stage: str, customer_id: str | None) -> None:
        """Refuse the message while its customer is flagged for this stage."""
        folder = self._armed.get(REFUSE_FLAGGED)
        if folder and customer_id and (Path(folder) / f"{stage}-{customer_id}").exists():
            raise PermanentError(
                Reason.INVALID_REQUEST, f"failpoint: {stage} refuses {customer_id}'s messages"
            )
