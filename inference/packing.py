"""The speech model's turns, and short clips packed into one window of the model.

Whisper's encoder reads 30 s of audio whatever it is given: a 6-s clip is padded with
silence and costs as much as a 30-s one (on tiny.en, 0.44 of the 0.67 CPU seconds of a
6-s call). Calls waiting for a turn of the model are therefore packed: when a turn
frees, the first waiting call takes it and brings along the other waiting clips of the
same tenant and language that fit in the window, one second of silence apart, and each
clip gets back the words whose times fall in its span. Four 6-s clips cost 0.25 CPU
seconds each instead of 0.67 (bench/media.py measures it, WER beside it).

A call that finds a turn free runs at once and alone, so a quiet worker adds no
latency. Under load (another turn in use, calls waiting, or another call arrived within
``gather_seconds``) a call that takes a turn with room left in its window waits up to
``gather_seconds`` for its tenant's next clips: in a burst, clips reach a worker a few
at a time and one by one, and would otherwise each take a window of their own.

Never across tenants: a window is decoded as one sequence, so one clip's words are
decoded after another's, and a word placed in time wrongly by the aligner would land
in the other clip's transcript. One customer's clips may share a window; two
customers' never do.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client import Histogram

from inference.transcriber import Segment
from vidinsight.errors import StageTimeout, remaining_seconds

SAMPLE_RATE_HZ = 16_000
WINDOW_SECONDS = 30.0
GAP_SECONDS = 1.0

Samples = npt.NDArray[np.float32]

PACK_CLIPS = Histogram(
    "vidinsight_transcribe_pack_clips",
    "Clips transcribed in one window of the speech model (1: alone).",
    buckets=(1, 2, 3, 4, 6, 8),
)


@dataclass(eq=False)
class Request:
    """One call's audio, what it may be packed with, and what became of it.

    ``key`` is None for audio that is never packed (too long, or of no tenant)."""

    samples: Samples
    key: Hashable | None
    deadline: float | None
    result: tuple[Segment, ...] = ()
    window_clips: int = 1
    error: BaseException | None = None
    taken: bool = False
    done: bool = False

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE_HZ


@dataclass(frozen=True)
class Placed:
    """Where a request's audio sits in a packed window."""

    request: Request
    offset_seconds: float

    def owns(self, start: float, end: float) -> bool:
        """Whether a word timed ``start``-``end`` in the window is this clip's: its middle
        lies in the clip's span widened by half the gap on each side."""
        middle = (start + end) / 2
        half_gap = GAP_SECONDS / 2
        return (
            self.offset_seconds - half_gap
            <= middle
            < self.offset_seconds + self.request.seconds + half_gap
        )

    def local(self, seconds: float) -> float:
        """A window time as a time in the clip, kept inside the clip."""
        return min(max(seconds - self.offset_seconds, 0.0), self.request.seconds)


def packed_audio(pack: list[Request]) -> tuple[Samples, list[Placed]]:
    """The pack's clips one after another, ``GAP_SECONDS`` of silence apart."""
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE_HZ), dtype=np.float32)
    parts: list[Samples] = []
    placed: list[Placed] = []
    offset = 0.0
    for request in pack:
        if parts:
            parts.append(gap)
            offset += GAP_SECONDS
        placed.append(Placed(request, offset))
        parts.append(request.samples)
        offset += request.seconds
    return np.concatenate(parts), placed


def window_seconds(pack: list[Request]) -> float:
    """Seconds of the window the pack's clips take, with the gaps between them."""
    return sum(member.seconds for member in pack) + GAP_SECONDS * (len(pack) - 1)


def pack_deadline(pack: list[Request]) -> float | None:
    """A pack ends by the earliest deadline of its clips, so none outlives its handler."""
    deadlines = [request.deadline for request in pack if request.deadline is not None]
    return min(deadlines) if deadlines else None


def packable(seconds: float) -> bool:
    """Whether a clip leaves room in the window for another one."""
    return seconds + GAP_SECONDS < WINDOW_SECONDS


@dataclass
class Turns:
    """The model's workers, taken in turn by the transcriptions of a process."""

    workers: int
    gather_seconds: float = 0.0
    _free: int = field(init=False)
    _waiting: list[Request] = field(init=False, default_factory=list)
    _arrived_at: float = field(init=False, default=-math.inf)
    _changed: threading.Condition = field(init=False, default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._free = self.workers

    @property
    def waiting(self) -> int:
        """Calls waiting for a turn (a gauge of the model's queue)."""
        with self._changed:
            return len(self._waiting)

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a turn outside any pack; False if none freed within ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._free > 0, timeout):
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()

    def run(self, request: Request, what: str, transcribe: Callable[[list[Request]], None]) -> None:
        """Run ``request`` on a turn, in a pack led by this call or by another.

        ``transcribe`` sets the ``result`` of every request of the pack it is given.
        Raises what the pack's transcription raised, or StageTimeout once the request's
        deadline passes while it waits for a turn.
        """
        with self._changed:
            now = time.monotonic()
            arriving = now - self._arrived_at < self.gather_seconds
            self._arrived_at = now
            self._waiting.append(request)
            self._changed.notify_all()
            pack = self._lead_or_wait(request, what)
            if pack and (arriving or self._busy()):  # under load: let the window fill
                self._gather(pack)
        if pack:
            PACK_CLIPS.observe(len(pack))
            try:
                transcribe(pack)
            except BaseException as error:
                for member in pack:
                    member.error = error
            finally:
                with self._changed:
                    for member in pack:
                        member.done = True
                    self._free += 1
                    self._changed.notify_all()
        if request.error is not None:
            raise request.error

    def _lead_or_wait(self, request: Request, what: str) -> list[Request]:
        """The pack this call leads, or [] once another call's pack has run it."""
        while not request.done:
            if not request.taken and self._free > 0:
                self._free -= 1
                return self._take(request)
            try:
                left = remaining_seconds(request.deadline, what)
            except StageTimeout:
                if request.taken:  # the pack ends by this deadline too
                    self._changed.wait()
                    continue
                self._waiting.remove(request)
                raise StageTimeout(f"{what}: deadline passed waiting for the model") from None
            self._changed.wait(left)
        return []

    def _take(self, leader: Request) -> list[Request]:
        """The leader and the waiting clips of its key that fit in the window, in the
        order they came (so the same clips make the same window, whoever leads)."""
        pack: list[Request] = []
        used = leader.seconds
        for other in list(self._waiting):
            if other is leader:
                pack.append(self._taken(other))
            elif self._fits(leader, other, used):
                pack.append(self._taken(other))
                used += GAP_SECONDS + other.seconds
        return pack

    def _add_waiting(self, pack: list[Request]) -> None:
        """Add to ``pack`` the waiting clips of its key that still fit, in order."""
        used = window_seconds(pack)
        for other in list(self._waiting):
            if self._fits(pack[0], other, used):
                pack.append(self._taken(other))
                used += GAP_SECONDS + other.seconds

    @staticmethod
    def _fits(leader: Request, other: Request, used: float) -> bool:
        """Whether ``other`` may join ``leader``'s window, ``used`` seconds of it taken."""
        return (
            leader.key is not None
            and other.key == leader.key
            and used + GAP_SECONDS + other.seconds <= WINDOW_SECONDS
        )

    def _taken(self, request: Request) -> Request:
        request.taken = True
        self._waiting.remove(request)
        return request

    def _busy(self) -> bool:
        """Whether another turn is in use or other calls wait: clips are arriving."""
        return self.workers - self._free > 1 or bool(self._waiting)

    def _gather(self, pack: list[Request]) -> None:
        """Let clips of the pack's key that arrive within ``gather_seconds`` join it, until
        the window is full or the pack's earliest deadline is near."""
        if pack[0].key is None or self.gather_seconds <= 0:
            return
        end = time.monotonic() + self.gather_seconds
        deadline = pack_deadline(pack)
        if deadline is not None:
            end = min(end, deadline)
        while self._room(pack) and (left := end - time.monotonic()) > 0:
            self._changed.wait(left)
            self._add_waiting(pack)

    @staticmethod
    def _room(pack: list[Request]) -> float:
        """Seconds the window can still take, gap included."""
        return max(WINDOW_SECONDS - window_seconds(pack) - GAP_SECONDS, 0.0)
