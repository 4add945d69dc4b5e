"""Limits on what a file holds, not on what it declares: its length is measured on its
packets (probe) and on what is decoded (audio, frames), its picture size checked on the
stream and on every decoded frame, and each step stops as soon as a limit is passed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from media.audio import BYTES_PER_SECOND, extract_audio
from media.keyframes import keyframes
from media.probe import probe
from media.scenes import Scene, detect_scenes
from tests.fixtures.media import (
    HUGE_PICTURE,
    LYING_DECLARED_SECONDS,
    LYING_SECONDS,
    GeneratedMedia,
    HostileMedia,
)
from vidinsight.errors import PermanentError, Reason

MAX_SECONDS = 8.0
# What each step may read past the limit before it stops: a second of audio, a frame.
OVERSHOOT_SECONDS = 1.0
DEFAULT_PIXELS = 8192 * 4320
LIMITS: dict[str, Any] = {"max_bytes": 10**9, "max_picture_pixels": DEFAULT_PIXELS}


def reached_seconds(error: PermanentError) -> float:
    """How far the step read before it stopped, as its message says."""
    found = re.search(r"its data reaches ([0-9.]+) s", error.message)
    assert found, error.message
    return float(found.group(1))


def assert_customer_facing(error: PermanentError) -> None:
    """The message names the problem and shows no server path."""
    assert "/" not in error.message, error.message


def test_a_lying_container_is_measured_by_its_packets(hostile_media: HostileMedia) -> None:
    lying = hostile_media.file("lying.mkv")
    info = probe(lying, **LIMITS, max_duration_seconds=3600)
    assert info.duration_seconds == pytest.approx(LYING_SECONDS, abs=0.5)
    with pytest.raises(PermanentError) as caught:
        probe(lying, **LIMITS, max_duration_seconds=MAX_SECONDS)
    assert caught.value.reason is Reason.TOO_LONG
    assert "longer than the maximum of 8 s" in caught.value.message
    assert f"{LYING_DECLARED_SECONDS:.1f} s declared" in caught.value.message
    assert MAX_SECONDS <= reached_seconds(caught.value) <= MAX_SECONDS + OVERSHOOT_SECONDS
    assert_customer_facing(caught.value)


def test_a_container_without_a_duration_is_measured(hostile_media: HostileMedia) -> None:
    undeclared = hostile_media.file("undeclared.mkv")
    assert probe(undeclared, **LIMITS, max_duration_seconds=3600).duration_seconds == (
        pytest.approx(LYING_SECONDS, abs=0.5)
    )
    with pytest.raises(PermanentError) as caught:
        probe(undeclared, **LIMITS, max_duration_seconds=MAX_SECONDS)
    assert caught.value.reason is Reason.TOO_LONG
    assert "no duration declared" in caught.value.message


def test_audio_extraction_stops_at_the_maximum(hostile_media: HostileMedia, tmp_path: Path) -> None:
    """Counted on the decoded samples: it stops within a second of the maximum."""
    target = tmp_path / "audio.wav"
    with pytest.raises(PermanentError) as caught:
        extract_audio(hostile_media.file("lying.mkv"), target, max_seconds=MAX_SECONDS)
    assert caught.value.reason is Reason.TOO_LONG
    assert MAX_SECONDS <= reached_seconds(caught.value) <= MAX_SECONDS + OVERSHOOT_SECONDS
    assert target.stat().st_size <= (MAX_SECONDS + OVERSHOOT_SECONDS) * BYTES_PER_SECOND
    assert_customer_facing(caught.value)


def test_scene_detection_stops_at_the_maximum(hostile_media: HostileMedia) -> None:
    with pytest.raises(PermanentError) as caught:
        detect_scenes(hostile_media.file("lying.mkv"), max_seconds=MAX_SECONDS)
    assert caught.value.reason is Reason.TOO_LONG
    assert MAX_SECONDS <= reached_seconds(caught.value) <= MAX_SECONDS + OVERSHOOT_SECONDS


def test_a_picture_over_the_maximum_is_refused_at_probe(
    hostile_media: HostileMedia, generated_media: GeneratedMedia
) -> None:
    with pytest.raises(PermanentError) as caught:
        probe(hostile_media.file("huge_picture.mkv"), **LIMITS, max_duration_seconds=3600)
    assert caught.value.reason is Reason.PICTURE_TOO_LARGE
    width, height = HUGE_PICTURE
    assert f"{width}x{height}" in caught.value.message
    assert f"maximum of {DEFAULT_PIXELS} pixels" in caught.value.message
    small = {**LIMITS, "max_picture_pixels": 160 * 90 - 1}
    with pytest.raises(PermanentError) as caught:
        probe(generated_media.file("short.mp4"), **small, max_duration_seconds=3600)
    assert caught.value.reason is Reason.PICTURE_TOO_LARGE


def test_a_picture_that_grows_mid_stream_is_refused_when_decoded(
    hostile_media: HostileMedia,
) -> None:
    """The stream's headers say 160x90, so the probe lets it through; the decoder
    refuses the 36-megapixel frames before allocating them, in both decoding paths."""
    switch = hostile_media.file("resolution_switch.ts")
    info = probe(switch, **LIMITS, max_duration_seconds=3600)
    assert info.video is not None and (info.video.width, info.video.height) == (160, 90)
    with pytest.raises(PermanentError) as caught:
        detect_scenes(switch, max_pixels=DEFAULT_PIXELS)
    assert caught.value.reason is Reason.PICTURE_TOO_LARGE
    assert "{}x{}".format(*HUGE_PICTURE) in caught.value.message
    in_the_huge_part = [Scene(start_seconds=2.0, end_seconds=4.0, keyframe_seconds=2.5)]
    with pytest.raises(PermanentError) as caught:
        list(keyframes(switch, in_the_huge_part, max_width=1280, max_pixels=DEFAULT_PIXELS))
    assert caught.value.reason is Reason.PICTURE_TOO_LARGE
