"""Cutting long audio into chunks at silences, so no word is split between two chunks.

Each cut goes to the quietest short window within a search range around the target
length. Speech always has pauses between sentences and phrases far longer than one
window, so the quietest window near the target is a pause, not the middle of a word.
The levels are measured over the WAV a block at a time, so memory does not grow with
the length of the audio beyond 4 bytes per 20 ms.

A long video's segments are cut by workers that do not talk to each other. Two neighbours
still agree on their common border to the sample: both choose it by the same rule from the
same samples, decoded by the same FFmpeg command (``border_window``), with frames counted
from the start of the media, so the chunks of all segments tile the video's timeline.
"""

from __future__ import annotations

import itertools
import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from media.audio import SAMPLE_RATE_HZ, read_frames

# Loudness is measured over 20 ms frames; a cut lands in the middle of the quietest
# run of this many frames (200 ms), so it sits inside a pause, not at its edge.
FRAME_SECONDS = 0.02
QUIET_RUN_FRAMES = 10
# Frames read from the WAV at a time (10 s).
BLOCK_FRAMES = 500
# A border's search window is decoded from this long before it to this long after it, so
# what disturbs the first samples of a decode that starts with a seek (the decoder's first
# frames, the resampler's empty history) and the last ones (the resampler's flush) stays
# outside the window.
BORDER_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk: [start, end) in samples of its WAV, and in seconds of the media.

    A segment's WAV starts inside the media, at ``origin_sample``: the samples are what
    copy_span reads from the WAV, the seconds are on the video's timeline.
    """

    index: int
    start_sample: int
    end_sample: int
    sample_rate_hz: int
    origin_sample: int = 0

    @property
    def start_seconds(self) -> float:
        return (self.origin_sample + self.start_sample) / self.sample_rate_hz

    @property
    def end_seconds(self) -> float:
        return (self.origin_sample + self.end_sample) / self.sample_rate_hz


class AudioWindow(NamedTuple):
    """The part of the media's audio to extract: ``duration_seconds`` (None: to the end)
    from ``start_seconds``, which is a whole number of 20 ms frames into the media."""

    start_seconds: float
    duration_seconds: float | None


def frame_energy(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Root-mean-square level of each 20 ms frame.

    The sums of squares are exact integers and the rest is correctly rounded, so the same
    samples give the same levels bit for bit, however they are laid out in memory: the
    two neighbours of a border must find the same quietest spot.
    """
    frame = _frame_samples(sample_rate_hz)
    usable = len(samples) // frame * frame
    frames = samples[:usable].astype(np.int64).reshape(-1, frame)
    return np.sqrt(np.sum(frames * frames, axis=1) / frame).astype(np.float32)


def wav_energy(wav: Path) -> tuple[np.ndarray, int, int]:
    """Level of each 20 ms frame of a 16-bit mono WAV, its sample count and its rate.

    Read a block at a time: memory is the levels (4 bytes per 20 ms: 4.3 MB for six
    hours), never the samples (a whole-track float copy of six hours is 1.4 GB).
    """
    parts = []
    with wave.open(str(wav), "rb") as handle:
        rate, total = handle.getframerate(), handle.getnframes()
        frame = _frame_samples(rate)
        for start in range(0, total, frame * BLOCK_FRAMES):
            parts.append(frame_energy(read_frames(handle, start, frame * BLOCK_FRAMES), rate))
    energy = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return energy, total, rate


def plan_chunks(wav: Path, *, target_seconds: float, search_seconds: float) -> list[ChunkSpan]:
    """Chunks of about ``target_seconds`` each, every cut in the quietest spot near the target."""
    levels = _Levels.measure(wav, 0.0)
    return _chunks(levels, 0, levels.total, target_seconds, search_seconds)


def border_window(nominal_seconds: float, search_seconds: float) -> AudioWindow:
    """The audio from which the border between two segments near ``nominal_seconds`` is
    chosen: its search window, ``search_seconds`` either side, with a margin around it.

    Both neighbours choose from this very decode: the later one's own audio starts with it
    (``audio_window``), the earlier one extracts it apart. Lossy decoders give other
    samples when started elsewhere (FFmpeg's AAC decoder fills noise-coded bands from a
    generator that runs from the first frame it decodes, and differs forever after a
    seek), so only the same decode is sure to give the same levels, and the same border.
    """
    start, end = _border_samples(nominal_seconds, search_seconds)
    return AudioWindow(start / SAMPLE_RATE_HZ, (end - start) / SAMPLE_RATE_HZ)


def audio_window(
    start_seconds: float, end_seconds: float | None, search_seconds: float
) -> AudioWindow:
    """The audio to extract for the segment [start, end) of the media (end None: to its
    end): from its start border's window (or the media's start) to the end of its end
    border's window, so it holds both search windows and every sample it may keep."""
    first = _border_samples(start_seconds, search_seconds)[0] if start_seconds else 0
    if end_seconds is None:
        return AudioWindow(first / SAMPLE_RATE_HZ, None)
    last = _border_samples(end_seconds, search_seconds)[1]
    return AudioWindow(first / SAMPLE_RATE_HZ, (last - first) / SAMPLE_RATE_HZ)


def _border_samples(nominal_seconds: float, search_seconds: float) -> tuple[int, int]:
    """[start, end) of ``border_window`` in samples of the media, the start on a frame."""
    frame = _frame_samples(SAMPLE_RATE_HZ)
    early = nominal_seconds - search_seconds - BORDER_MARGIN_SECONDS
    start = max(0, math.floor(early * SAMPLE_RATE_HZ / frame)) * frame
    late = nominal_seconds + search_seconds + BORDER_MARGIN_SECONDS
    return start, math.ceil(late * SAMPLE_RATE_HZ)


def plan_segment_chunks(
    wav: Path,
    *,
    segment_start_seconds: float,
    segment_end_seconds: float | None,
    end_border_wav: Path | None,
    target_seconds: float,
    search_seconds: float,
) -> list[ChunkSpan]:
    """The chunks of one segment of the media, between the borders it shares with its
    neighbours, cut inside as ``plan_chunks`` cuts; their seconds are the video's.

    ``wav`` is the audio of ``audio_window``; ``end_border_wav`` that of
    ``border_window(segment_end_seconds)`` (None for the last segment, whose chunks go to
    the end of the audio). A border is the middle of the quietest 200 ms wholly within
    its search window, the nearest to the nominal time among equally quiet ones: the
    first segment starts at 0 and the last ends with the audio, and where the audio
    ends before a border the segment ends with it (the later ones are empty).
    """
    if segment_end_seconds is not None and (
        segment_end_seconds - segment_start_seconds <= 2 * search_seconds
    ):
        raise ValueError("a segment must be longer than two search windows")
    if (segment_end_seconds is None) != (end_border_wav is None):
        raise ValueError("the end border's audio is needed exactly when the segment has an end")
    window = audio_window(segment_start_seconds, segment_end_seconds, search_seconds)
    levels = _Levels.measure(wav, window.start_seconds)
    start = _border(levels, segment_start_seconds, search_seconds) if segment_start_seconds else 0
    end = levels.origin + levels.total
    if segment_end_seconds is not None and end_border_wav is not None:
        border = border_window(segment_end_seconds, search_seconds)
        end_levels = _Levels.measure(end_border_wav, border.start_seconds)
        end = min(end, _border(end_levels, segment_end_seconds, search_seconds))
    return _chunks(
        levels, start - levels.origin, end - levels.origin, target_seconds, search_seconds
    )


@dataclass(frozen=True)
class _Levels:
    """A WAV's levels as sums over runs of QUIET_RUN_FRAMES frames (``runs[i]`` starts at
    frame i), its length and rate, and where it starts on the media's timeline."""

    runs: np.ndarray
    total: int
    rate: int
    origin: int

    @classmethod
    def measure(cls, wav: Path, start_seconds: float) -> _Levels:
        """The levels of ``wav``, extracted from ``start_seconds`` of the media."""
        energy, total, rate = wav_energy(wav)
        origin = round(start_seconds * rate)
        if origin % _frame_samples(rate):
            raise ValueError(f"audio from {start_seconds} s does not start on a 20 ms frame")
        # Exact sums (of ten float32 levels, in float64), whatever the order of adding.
        if len(energy) < QUIET_RUN_FRAMES:
            return cls(np.zeros(0), total, rate, origin)
        return cls(np.convolve(energy, np.ones(QUIET_RUN_FRAMES), "valid"), total, rate, origin)

    @property
    def frame(self) -> int:
        return _frame_samples(self.rate)


def _chunks(
    levels: _Levels, start: int, end: int, target_seconds: float, search_seconds: float
) -> list[ChunkSpan]:
    """Chunks covering samples [start, end) of the WAV, each about ``target_seconds``."""
    if end <= start:
        return []
    frame = levels.frame
    runs = levels.runs[: max(0, end // frame - QUIET_RUN_FRAMES + 1)]  # those ending by end
    cuts = [start]
    target = int(target_seconds * levels.rate)
    search = int(search_seconds * levels.rate)
    while end - cuts[-1] > target + search:
        ideal = cuts[-1] + target
        cuts.append(_quietest_cut(runs, frame, ideal - search, ideal + search))
    cuts.append(end)
    return [
        ChunkSpan(index, first, last, levels.rate, levels.origin)
        for index, (first, last) in enumerate(itertools.pairwise(cuts))
    ]


def _border(levels: _Levels, nominal_seconds: float, search_seconds: float) -> int:
    """The border near ``nominal_seconds`` as a sample of the media (see
    ``plan_segment_chunks``): the same from any WAV that starts with ``border_window``'s."""
    low = round((nominal_seconds - search_seconds) * levels.rate) - levels.origin
    high = round((nominal_seconds + search_seconds) * levels.rate) - levels.origin
    cut = _quietest_cut(levels.runs, levels.frame, low, high - QUIET_RUN_FRAMES * levels.frame)
    return levels.origin + min(cut, levels.total)


def _quietest_cut(runs: np.ndarray, frame: int, low_sample: int, high_sample: int) -> int:
    """Sample position in the middle of the quietest run of frames within [low, high]."""
    first = max(0, low_sample // frame)
    last = min(len(runs) - 1, high_sample // frame)
    if last < first:
        return high_sample
    window = runs[first : last + 1]
    # Among equally quiet runs (digital silence) take the one nearest the target.
    quietest = np.flatnonzero(window <= window.min() + 1e-6)
    centre = (len(window) - 1) / 2
    best = int(quietest[np.argmin(np.abs(quietest - centre))])
    return (first + best) * frame + QUIET_RUN_FRAMES * frame // 2


def _frame_samples(sample_rate_hz: int) -> int:
    return max(1, int(sample_rate_hz * FRAME_SECONDS))
