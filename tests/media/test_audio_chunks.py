"""Audio extraction to 16 kHz mono, and chunks cut in silences, never inside speech.

A long video's segments are planned by workers apart: the chunks of all its segments
must still tile the timeline to the sample, with every border in a pause.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from media.audio import SAMPLE_RATE_HZ, extract_audio, read_wav, write_wav
from media.chunking import (
    ChunkSpan,
    audio_window,
    border_window,
    plan_chunks,
    plan_segment_chunks,
)
from media.tools import run_ffmpeg
from tests.fixtures.media import GeneratedMedia, SpeechTruth
from tests.media.test_limits import reached_seconds
from vidinsight.errors import PermanentError, Reason

# A cut must sit at least this far from the nearest spoken sentence.
MARGIN_SECONDS = 0.05
# Segments of the 205 s talk: round borders, and borders off any round number.
LAYOUTS = [[50.0, 100.0, 150.0], [37.3, 101.01, 166.66]]
SEGMENT_CHUNK_SECONDS = 20.0
SEGMENT_SEARCH_SECONDS = 5.0


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
        assert 25 <= after.start_seconds - before.start_seconds <= 35
        assert_in_a_pause(after.start_seconds, generated_media.speech)


def test_silent_and_short_audio(generated_media: GeneratedMedia, tmp_path: Path) -> None:
    silent = extract_audio(generated_media.file("silent.mp4"), tmp_path / "s.wav")
    chunks = plan_chunks(silent, target_seconds=60, search_seconds=10)
    assert [(c.start_seconds, round(c.end_seconds, 1)) for c in chunks] == [(0.0, 4.0)]
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16))
    assert plan_chunks(empty, target_seconds=60, search_seconds=10) == []


@pytest.fixture(scope="module")
def opus_talk(generated_media: GeneratedMedia, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The talk as Opus in WebM: decoded from a seek, its samples are not those of the
    decode from the start (shifted by about 5 ms), so neighbours that chose their
    border each from its own decode would disagree."""
    target = tmp_path_factory.mktemp("opus") / "talk.webm"
    run_ffmpeg(["-i", str(generated_media.video), "-vn", "-c:a", "libopus", "-b:a", "24k",
                str(target)])  # fmt: skip
    return target


def assert_in_a_pause(cut: float, speech: SpeechTruth) -> None:
    inside = [t for s, e, t in speech.sentences if s - MARGIN_SECONDS <= cut <= e + MARGIN_SECONDS]
    assert inside == [], f"cut at {cut:.2f} s falls inside {inside}"


def plan_segments(media: Path, borders: list[float], folder: Path) -> list[list[ChunkSpan]]:
    """Each segment's chunks as its own worker plans them: from the audio it extracts
    alone (and its end border's window), knowing nothing of the other segments."""
    plans = []
    for index, (start, end) in enumerate(zip([0.0, *borders], [*borders, None], strict=True)):
        window = audio_window(start, end, SEGMENT_SEARCH_SECONDS)
        wav = extract_audio(
            media,
            folder / f"segment{index}.wav",
            start_seconds=window.start_seconds,
            duration_seconds=window.duration_seconds,
        )
        end_border_wav = None
        if end is not None:
            border = border_window(end, SEGMENT_SEARCH_SECONDS)
            end_border_wav = extract_audio(
                media,
                folder / f"border{index}.wav",
                start_seconds=border.start_seconds,
                duration_seconds=border.duration_seconds,
            )
        plans.append(
            plan_segment_chunks(
                wav,
                segment_start_seconds=start,
                segment_end_seconds=end,
                end_border_wav=end_border_wav,
                target_seconds=SEGMENT_CHUNK_SECONDS,
                search_seconds=SEGMENT_SEARCH_SECONDS,
            )
        )
    return plans


def absolute(span: ChunkSpan) -> tuple[int, int]:
    """[start, end) of a chunk in samples of the media's timeline."""
    return span.origin_sample + span.start_sample, span.origin_sample + span.end_sample


def assert_tiled(plans: list[list[ChunkSpan]], borders: list[float], speech: SpeechTruth) -> None:
    """Neighbours agree on each border to the sample, near its nominal time and in a
    pause; inside a segment the chunks follow each other without gap or overlap."""
    for plan in plans:
        assert plan, "every segment of the talk has audio"
        for before, after in itertools.pairwise(plan):
            assert before.end_sample == after.start_sample
            assert_in_a_pause(after.start_seconds, speech)
    for nominal, (earlier, later) in zip(borders, itertools.pairwise(plans), strict=True):
        assert absolute(earlier[-1])[1] == absolute(later[0])[0]
        border = later[0].start_seconds
        assert abs(border - nominal) <= SEGMENT_SEARCH_SECONDS
        assert_in_a_pause(border, speech)


@pytest.mark.parametrize("borders", LAYOUTS)
def test_segments_tile_the_timeline(
    generated_media: GeneratedMedia, talk_audio: Path, tmp_path: Path, borders: list[float]
) -> None:
    plans = plan_segments(generated_media.video, borders, tmp_path)
    assert_tiled(plans, borders, generated_media.speech)
    assert absolute(plans[0][0])[0] == 0
    assert absolute(plans[-1][-1])[1] == len(read_wav(talk_audio))  # the audio's end


def test_borders_agree_where_a_seek_decodes_other_samples(
    generated_media: GeneratedMedia, opus_talk: Path, tmp_path: Path
) -> None:
    """Each neighbour choosing from its own decode would not do here: the samples of a
    decode depend on where it started."""
    whole = read_wav(extract_audio(opus_talk, tmp_path / "whole.wav"))
    window = border_window(LAYOUTS[0][0], SEGMENT_SEARCH_SECONDS)
    seeked = read_wav(
        extract_audio(
            opus_talk,
            tmp_path / "seeked.wav",
            start_seconds=window.start_seconds,
            duration_seconds=window.duration_seconds,
        )
    )
    offset = round(window.start_seconds * SAMPLE_RATE_HZ)
    assert not np.array_equal(seeked, whole[offset : offset + len(seeked)])
    for borders in LAYOUTS:  # from its own decode, the second's first border moves 20 ms
        plans = plan_segments(opus_talk, borders, tmp_path)
        assert_tiled(plans, borders, generated_media.speech)


def test_one_segment_is_the_whole_plan(talk_audio: Path) -> None:
    whole = plan_chunks(talk_audio, target_seconds=30, search_seconds=5)
    assert audio_window(0.0, None, 5) == (0.0, None)
    one = plan_segment_chunks(
        talk_audio,
        segment_start_seconds=0.0,
        segment_end_seconds=None,
        end_border_wav=None,
        target_seconds=30,
        search_seconds=5,
    )
    assert one == whole


def test_a_segment_is_too_long_on_the_media_timeline(
    generated_media: GeneratedMedia, tmp_path: Path
) -> None:
    """A segment from 150 s is 55 s long, but reaches past a maximum of 180 s."""
    target = tmp_path / "segment.wav"
    with pytest.raises(PermanentError) as caught:
        extract_audio(generated_media.video, target, start_seconds=150, max_seconds=180)
    assert caught.value.reason is Reason.TOO_LONG
    assert 180 <= reached_seconds(caught.value) <= 181
    extract_audio(generated_media.video, target, start_seconds=150, max_seconds=206)
    assert len(read_wav(target)) == 55 * SAMPLE_RATE_HZ
