"""A deadline bounds every media step: FFmpeg stuck on its input is killed and reaped at
the deadline (StageTimeout), a deadline already passed starts nothing, and one that fires
after FFmpeg finished does not turn its finished work into a timeout."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from media.audio import extract_audio
from media.keyframes import keyframes
from media.probe import probe
from media.scenes import detect_scenes, grey_frames
from media.tools import ffmpeg_output
from tests.fixtures.media import GeneratedMedia
from vidinsight.errors import Reason, StageTimeout

# The stuck FFmpeg is given this long...
DEADLINE_SECONDS = 1.5
# ...and must be killed no later than this after it, even on a loaded two-core machine.
SLACK_SECONDS = 3.0
# Less than a pipe holds (64 KiB on Linux), so writing it never blocks the test.
HEAD_BYTES = 60_000
LIMITS: dict[str, Any] = {
    "max_bytes": 10**9,
    "max_duration_seconds": 3600.0,
    "max_picture_pixels": 10**6,
}


# FFmpeg has this long to write a tenth of a second of silence and exit, loaded or not.
QUICK_DEADLINE_SECONDS = 3.0
# A tenth of a second of 8 kHz mono s16le silence is 1,600 bytes: one short block.
QUICK_ARGS = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.1", "-f", "s16le", "pipe:1"]


def ffmpeg_children() -> set[int]:
    """FFmpeg processes whose parent is this one, zombies (not yet reaped) included."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == os.getpid() and name.startswith("ffmpeg"):
            children.add(int(entry.name))
    return children


@pytest.fixture
def stalled_video(generated_media: GeneratedMedia, tmp_path: Path) -> Iterator[Path]:
    """A real video whose bytes stop arriving after its first 60 kB, and never end: a
    named pipe holding the head of talk.mp4, kept open for writing by the test itself
    (so FFmpeg waits for more instead of seeing the end of the file)."""
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # does not wait for a reader, unlike O_WRONLY
    with generated_media.video.open("rb") as source:
        os.write(writer, source.read(HEAD_BYTES))
    yield fifo
    os.close(writer)


def test_extract_audio_from_a_stalled_source_is_killed_at_the_deadline(
    stalled_video: Path, tmp_path: Path
) -> None:
    before = ffmpeg_children()
    deadline = time.monotonic() + DEADLINE_SECONDS
    with pytest.raises(StageTimeout) as caught:
        extract_audio(stalled_video, tmp_path / "audio.wav", deadline=deadline)
    ended = time.monotonic()
    assert deadline <= ended <= deadline + SLACK_SECONDS
    assert caught.value.reason is Reason.STAGE_TIMEOUT
    assert ffmpeg_children() == before  # killed and reaped, not left running or a zombie


def test_grey_frames_from_a_stalled_source_are_killed_at_the_deadline(
    stalled_video: Path,
) -> None:
    before = ffmpeg_children()
    deadline = time.monotonic() + DEADLINE_SECONDS
    with pytest.raises(StageTimeout):
        list(grey_frames(stalled_video, (96, 54), [], deadline=deadline))
    ended = time.monotonic()
    assert deadline <= ended <= deadline + SLACK_SECONDS
    assert ffmpeg_children() == before


def test_a_consumer_that_stops_early_leaves_no_ffmpeg_behind(
    generated_media: GeneratedMedia,
) -> None:
    before = ffmpeg_children()
    frames = grey_frames(generated_media.video, (96, 54), [])
    next(frames)
    assert ffmpeg_children() - before  # decoding is under way
    frames.close()
    assert ffmpeg_children() == before


def test_a_deadline_already_passed_starts_nothing(
    generated_media: GeneratedMedia, tmp_path: Path
) -> None:
    passed = time.monotonic()
    video = generated_media.video
    with pytest.raises(StageTimeout):
        extract_audio(video, tmp_path / "audio.wav", deadline=passed)
    with pytest.raises(StageTimeout):
        probe(video, **LIMITS, deadline=passed)
    with pytest.raises(StageTimeout):
        detect_scenes(video, deadline=passed)
    assert not (tmp_path / "audio.wav").exists()


def test_a_far_deadline_changes_nothing(generated_media: GeneratedMedia, tmp_path: Path) -> None:
    """The bounded calls give the same answers as unbounded ones when time is plenty."""
    far = time.monotonic() + 600
    video = generated_media.video
    info = probe(video, **LIMITS, deadline=far)
    assert info.duration_seconds == pytest.approx(generated_media.duration_seconds, abs=1)
    assert extract_audio(video, tmp_path / "audio.wav", deadline=far).stat().st_size > 0
    analysis = detect_scenes(video, deadline=far)
    assert len(analysis.cuts) == len(generated_media.cut_times)
    found = keyframes(video, analysis.scenes, max_width=1280, max_pixels=10**6, deadline=far)
    assert [index for index, _ in found] == list(range(len(analysis.scenes)))


def _poll(condition: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)


def _exited_unreaped(pids: set[int]) -> bool:
    """True once every one of ``pids`` has exited and waits to be reaped (a zombie)."""
    states = [(Path("/proc") / str(pid) / "stat").read_text() for pid in pids]
    return all(stat[stat.rindex(")") + 2] == "Z" for stat in states)


def _timers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if isinstance(thread, threading.Timer)}


def _wait_until_fired(timers_before: set[threading.Thread]) -> None:
    """Poll until the deadline timers started since ``timers_before`` have fired (the
    output is not being read, so nothing cancels them). Holds no timer once it returns:
    a timer holds the process, whose unclosed pipes the caller wants to see collected."""
    started = _timers() - timers_before
    assert started, "no deadline timer runs"
    _poll(lambda: not any(t.is_alive() for t in started), "deadline fired", 2 * SLACK_SECONDS)


def test_a_run_that_finished_before_its_deadline_fired_succeeds_and_leaks_no_pipe() -> None:
    """FFmpeg wrote everything and exited 0; its deadline's kill fires before the caller
    comes back for the end of the output: the run succeeded (no StageTimeout), FFmpeg is
    reaped and neither of its pipes is left for the garbage collector to close."""
    gc.collect()  # what earlier tests left (their sockets) is not this run's to answer for
    before, timers = ffmpeg_children(), _timers()
    deadline = time.monotonic() + QUICK_DEADLINE_SECONDS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        blocks = ffmpeg_output(QUICK_ARGS, 1 << 20, what="quick", deadline=deadline)
        first = next(blocks)  # shorter than asked for: the output has ended
        assert len(first) == 1600
        running = ffmpeg_children() - before
        _poll(lambda: _exited_unreaped(running), "FFmpeg exited", QUICK_DEADLINE_SECONDS)
        _wait_until_fired(timers)
        assert time.monotonic() >= deadline
        assert list(blocks) == []  # ends without StageTimeout
        del blocks
        gc.collect()
    assert ffmpeg_children() == before
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert [message for message in leaked if message.startswith("unclosed file")] == []
