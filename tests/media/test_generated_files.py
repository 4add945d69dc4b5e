"""The generated test media are built under names of their own and renamed into the
cache: two builders at once (two sessions, or the bench and a test) each get a whole
file, and neither a race nor a failed build leaves a partial file behind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from media.probe import probe
from tests.fixtures.media import built_in_place, tiny_media

SECONDS = 60


def test_two_builders_of_one_file_at_once_both_get_a_whole_file(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda _: tiny_media(tmp_path, SECONDS), range(2)))
    assert built[0] == built[1] == tmp_path / f"tiny-{SECONDS}s.mp4"
    info = probe(built[0], max_bytes=10**9, max_duration_seconds=3600.0, max_picture_pixels=10**6)
    assert info.duration_seconds == pytest.approx(SECONDS, abs=1)
    assert [path.name for path in tmp_path.iterdir()] == [built[0].name]


def test_a_failed_build_leaves_neither_target_nor_partial(tmp_path: Path) -> None:
    for folder in (True, False):
        target = tmp_path / ("media" if folder else "media.mp4")
        with pytest.raises(RuntimeError), built_in_place(target, folder=folder) as partial:
            (partial / "half" if folder else partial).write_bytes(b"half")
            raise RuntimeError("the encoder failed")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_built_twice_at_once_keeps_the_one_that_landed_first(tmp_path: Path) -> None:
    target = tmp_path / "media"
    with built_in_place(target, folder=True) as slow:
        (slow / "done").write_text("slow")
        with built_in_place(target, folder=True) as fast:
            (fast / "done").write_text("fast")
        assert (target / "done").read_text() == "fast"  # landed while the slow one builds
    assert (target / "done").read_text() == "fast"
    assert [path.name for path in tmp_path.iterdir()] == ["media"]
