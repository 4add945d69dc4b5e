"""Runs one handler call under its deadline, watching the partition's fence meanwhile.

The call runs in a thread of its own while the partition's thread watches the clock:
at the deadline the call is told to stop (``HandlerContext.check`` raises from then on,
and every blocking call inside was only given the time that remained), and it has a
grace period to return. A call that returns in time past its deadline ends
``stage_timeout``. A call that does not is reported as ``Hung``: a Python thread cannot
be killed, so the process must exit and be restarted by its supervisor. A fence raised
meanwhile (partition revoked or lost, shutdown) abandons the call at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from streams.runtime.context import HandlerContext
from streams.runtime.fence import Abandoned, Fence
from streams.runtime.stage import StageResult
from telemetry.logs import message_context
from vidinsight.errors import StageTimeout, attach_costs, costs_of

WATCH_STEP_SECONDS = 0.2
# How long a handler may run before the watching thread first looks up from it.
FIRST_WAIT_SECONDS = 0.01


class Hung(Exception):
    """A handler past its deadline did not give up within the grace period."""


def call_with_deadline(
    handler: Callable[[HandlerContext], StageResult],
    ctx: HandlerContext,
    fence: Fence,
    grace_seconds: float,
    log_fields: dict[str, Any],
    idle: Callable[[], None],
) -> StageResult:
    """``handler(ctx)``'s result; StageTimeout past the deadline, Hung, or Abandoned.

    ``idle`` is called now and then while the handler runs (the partition's thread has
    nothing else to do: it delivers what finished before)."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        with message_context(**log_fields):
            try:
                outcome["result"] = handler(ctx)
            except BaseException as exc:  # handed to the watching thread
                outcome["error"] = exc
            finally:
                done.set()

    threading.Thread(target=run, name=f"{ctx.stage}-handler", daemon=True).start()
    if not _wait_until(done, ctx.deadline, fence, idle):
        ctx.stop()
        if fence.raised:
            raise Abandoned()
        if not done.wait(grace_seconds):
            raise Hung(f"handler still running {grace_seconds:.0f} s after its deadline")
        timeout = StageTimeout(f"the {ctx.stage} handler ran past its deadline")
        attach_costs(timeout, costs_of(outcome.get("error") or Exception()))
        raise timeout
    if "error" in outcome:
        raise outcome["error"]
    result: StageResult = outcome["result"]
    return result


def _wait_until(
    done: threading.Event, deadline: float, fence: Fence, idle: Callable[[], None]
) -> bool:
    """True once ``done``; False at the deadline or when the fence goes up."""
    if done.wait(FIRST_WAIT_SECONDS):  # a light handler: no idle work in between
        return True
    while not fence.raised:
        idle()
        left = deadline - time.monotonic()
        if left <= 0:
            return done.is_set()
        if done.wait(min(WATCH_STEP_SECONDS, left)):
            return True
    return done.is_set()
