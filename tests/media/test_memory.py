"""Preprocessing memory does not grow with the media's length (a short version of
bench/media_memory.py, which measures six hours against its ceiling)."""

from __future__ import annotations

from bench.media_memory import CEILING_MB, measure
from tests.fixtures.media import tiny_media
from vidinsight.settings import Settings

SHORT_SECONDS = 180
LONG_SECONDS = 1800
# Ten times the media may cost this much more memory: allocator noise, not the length.
# Before issue #13 the whole-track audio copies cost 0.16 MB per second of media (six
# hours peaked at 3.5 GB): +250 MB for these 27 extra minutes, a ratio near 2.
RATIO_LIMIT = 1.2


def test_thirty_minutes_take_the_memory_of_three(settings: Settings) -> None:
    folder = settings.state_dir / "test-media" / "tiny"
    short = measure(tiny_media(folder, SHORT_SECONDS), SHORT_SECONDS)
    long = measure(tiny_media(folder, LONG_SECONDS), LONG_SECONDS)
    assert long["scenes"] == LONG_SECONDS // 30 and long["chunks"] >= 25
    assert long["self_mb"] <= RATIO_LIMIT * short["self_mb"], (short, long)
    assert long["self_mb"] <= CEILING_MB
