"""Audio extraction to 16 kHz mono, and chunks cut in silences, never inside speech."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from media.audio import SAMPLE_RATE_HZ, extract_audio, read_wav, write_wav
from media.chunking import plan_chunks
from tests.fixtures.media import GeneratedMedia

# A cut must sit at least this far from the nearest spoken sentence.
MARGIN_SECONDS = 0.05


@pytest.fixture(scope="module")
def talk_audio(generated_media: GeneratedMedia, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_audio(generated_media.video, tmp_path_factory.mktemp("audio") / "talk.wav")


def test_extracts_16k_mono_from_51_48k(generated_media: GeneratedMedia, tmp_path: Path) -> None:
    samples = read_wav(extract_audio(generated_media.file("portrait_51.mp4"), tmp_path / "a.wav"))
    assert len(samples) / SAMPLE_RATE_HZ == pytest.approx(4.0, abs=0.1)
    assert np.abs(samples).max() > 1000  # the tone survived the downmix


def test_chunk_cuts_fall_in_pauses(generated_media: GeneratedMedia, talk_audio: Path) -> None:
    samples = read_wav(talk_audio)
    chunks = plan_chunks(talk_audio, target_seconds=30, search_seconds=5)
    assert len(chunks) >= 6
    assert chunks[0].start_sample == 0 and chunks[-1].end_sample == len(samples)
    for before, after in itertools.pairwise(chunks):
        assert before.end_sample == after.start_sample
        cut = after.start_seconds
        assert 25 <= cut - before.start_seconds <= 35
        inside = [
            text
            for start, end, text in generated_media.speech.sentences
            if start - MARGIN_SECONDS <= cut <= end + MARGIN_SECONDS
        ]
        assert inside == [], f"cut at {cut:.2f} s falls inside {inside}"


def test_silent_and_short_audio(generated_media: GeneratedMedia, tmp_path: Path) -> None:
    silent = extract_audio(generated_media.file("silent.mp4"), tmp_path / "s.wav")
    chunks = plan_chunks(silent, target_seconds=60, search_seconds=10)
    assert [(c.start_seconds, round(c.end_seconds, 1)) for c in chunks] == [(0.0, 4.0)]
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16))
    assert plan_chunks(empty, target_seconds=60, search_seconds=10) == []
