"""The model's turns: which waiting clips share a window, and what a deadline does to a
clip waiting for one. The model itself is left out here (tests/inference/
test_transcriber.py packs real speech); ``transcribe`` records the packs it is given."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import numpy as np
import pytest

from inference.packing import (
    GAP_SECONDS,
    SAMPLE_RATE_HZ,
    WINDOW_SECONDS,
    Request,
    Turns,
    packed_audio,
)
from tests.fixtures.waiting import wait_until
from vidinsight.errors import StageTimeout


def clip(seconds: float, key: Hashable | None, deadline: float | None = None) -> Request:
    return Request(np.zeros(int(seconds * SAMPLE_RATE_HZ), dtype=np.float32), key, deadline)


def packs_formed_behind_a_held_turn(requests: list[Request]) -> list[list[Request]]:
    """The packs ``requests`` form when they all wait for the one turn, held meanwhile."""
    turns = Turns(workers=1)
    packs: list[list[Request]] = []
    assert turns.acquire(timeout=0)
    threads = [
        threading.Thread(target=turns.run, args=(request, "test", packs.append))
        for request in requests
    ]
    started: list[threading.Thread] = []
    for thread in threads:  # one at a time, so that they wait in the order of ``requests``
        thread.start()
        started.append(thread)
        wait_until(lambda: turns.waiting == len(started), 30, "a waiter")
    turns.release()
    for thread in threads:
        thread.join(timeout=30)
    assert all(request.done for request in requests)
    assert turns.acquire(timeout=0), "the turn was not given back"
    return packs


def test_one_tenants_waiting_clips_share_a_window_and_two_tenants_never_do() -> None:
    a = [clip(6.0, ("a", "en")) for _ in range(3)]
    b = [clip(6.0, ("b", "en")) for _ in range(2)]
    packs = packs_formed_behind_a_held_turn([a[0], b[0], a[1], b[1], a[2]])
    assert sorted(map(len, packs)) == [2, 3]
    assert {frozenset(map(id, pack)) for pack in packs} == {
        frozenset(map(id, a)),
        frozenset(map(id, b)),
    }


def test_a_window_never_holds_more_than_thirty_seconds() -> None:
    """Five 6-s clips need 30 s plus four gaps: four fit, the fifth waits for a window."""
    clips = [clip(6.0, ("a", "en")) for _ in range(5)]
    packs = packs_formed_behind_a_held_turn(clips)
    assert [len(pack) for pack in packs] == [4, 1]
    audio, placed = packed_audio(packs[0])
    assert len(audio) / SAMPLE_RATE_HZ == 4 * 6.0 + 3 * GAP_SECONDS <= WINDOW_SECONDS
    assert [p.offset_seconds for p in placed] == [0.0, 7.0, 14.0, 21.0]


def test_clips_of_another_language_or_no_key_go_alone() -> None:
    clips = [clip(6.0, ("a", "en")), clip(6.0, ("a", "de")), clip(6.0, None), clip(6.0, None)]
    packs = packs_formed_behind_a_held_turn(clips)
    assert [len(pack) for pack in packs] == [1, 1, 1, 1]


def test_a_word_belongs_to_the_clip_its_middle_falls_in() -> None:
    _, placed = packed_audio([clip(6.0, "a"), clip(6.0, "a")])
    first, second = placed
    assert first.owns(5.5, 6.4) and not second.owns(5.5, 6.4)  # middle 5.95, in the gap
    assert second.owns(6.4, 7.4) and not first.owns(6.4, 7.4)  # middle 6.9, in the gap
    assert second.local(6.4) == 0.0 and second.local(13.5) == 6.0  # kept inside the clip


def test_a_clip_waiting_past_its_deadline_gives_up_and_leaves_the_queue() -> None:
    turns = Turns(workers=1)
    assert turns.acquire(timeout=0)
    late = clip(6.0, ("a", "en"), deadline=time.monotonic() + 0.3)
    with pytest.raises(StageTimeout, match="waiting for the model"):
        turns.run(late, "test", lambda pack: None)
    assert turns.waiting == 0
    turns.release()
    assert turns.acquire(timeout=0)


def test_a_pack_failing_fails_each_of_its_clips_and_frees_the_turn() -> None:
    turns = Turns(workers=1)
    errors: list[BaseException] = []

    def fail(pack: list[Request]) -> None:
        raise RuntimeError(f"pack of {len(pack)} failed")

    def run(request: Request) -> None:
        try:
            turns.run(request, "test", fail)
        except RuntimeError as error:
            errors.append(error)

    assert turns.acquire(timeout=0)
    threads = [threading.Thread(target=run, args=(clip(6.0, "a"),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: turns.waiting == 2, 30, "two waiters")
    turns.release()
    for thread in threads:
        thread.join(timeout=30)
    assert [str(error) for error in errors] == ["pack of 2 failed"] * 2
    assert turns.acquire(timeout=0)
