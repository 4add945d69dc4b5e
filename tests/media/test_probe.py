"""Probing: every kind of unprocessable file is refused with its own reason code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from media.probe import probe
from tests.fixtures.media import GeneratedMedia
from vidinsight.errors import PermanentError, Reason

SMALL_BYTES = 300_000
SMALL_SECONDS = 8.0
SMALL_PIXELS = 160 * 90
SMALL: dict[str, Any] = {
    "max_bytes": SMALL_BYTES,
    "max_duration_seconds": SMALL_SECONDS,
    "max_picture_pixels": SMALL_PIXELS,
}
UNLIMITED: dict[str, Any] = {
    "max_bytes": 10**9,
    "max_duration_seconds": 10**6,
    "max_picture_pixels": 10**8,
}


@pytest.mark.parametrize(
    ("name", "reason", "says"),
    [
        ("empty.mp4", Reason.EMPTY_MEDIA, "empty"),
        ("notes.mp4", Reason.NOT_MEDIA, "not a media file"),
        ("truncated.mp4", Reason.CORRUPT_MEDIA, "cannot be read"),
        ("subtitles.mkv", Reason.NO_STREAMS, "neither an audio nor a video stream"),
        ("long.mp4", Reason.TOO_LONG, "more than the maximum of 8 s"),
        ("large.wav", Reason.TOO_LARGE, "more than the maximum of 300000"),
    ],
)
def test_rejections_carry_their_reason(
    generated_media: GeneratedMedia, name: str, reason: Reason, says: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        probe(generated_media.file(name), **SMALL)
    assert caught.value.reason is reason
    assert says in caught.value.message


def test_truncated_file_with_its_index_first_is_corrupt(
    generated_media: GeneratedMedia, tmp_path: Path
) -> None:
    """A fast-start MP4 cut short opens fine; its packets stop early, so it is corrupt."""
    whole = generated_media.video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(PermanentError) as caught:
        probe(cut, **UNLIMITED)
    assert caught.value.reason is Reason.CORRUPT_MEDIA


def test_probe_describes_awkward_but_valid_files(generated_media: GeneratedMedia) -> None:
    portrait = probe(
        generated_media.file("portrait_51.mp4"),
        **SMALL,
    )
    assert (portrait.video and portrait.video.width, portrait.video and portrait.video.height) == (
        90,
        160,
    )
    assert portrait.audio is not None
    assert (portrait.audio.channels, portrait.audio.sample_rate) == (6, 48_000)
    audio_only = probe(
        generated_media.file("audio_only.m4a"),
        **SMALL,
    )
    assert audio_only.has_audio and not audio_only.has_video
    no_audio = probe(
        generated_media.file("no_audio.mp4"),
        **SMALL,
    )
    assert no_audio.has_video and not no_audio.has_audio
    talk = probe(generated_media.video, **UNLIMITED)
    assert talk.duration_seconds == pytest.approx(generated_media.duration_seconds, abs=0.2)
