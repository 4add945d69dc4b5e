"""Cutting long audio into chunks at silences, so no word is split between two chunks.

Each cut goes to the quietest short window within a search range around the target
length. Speech always has pauses between sentences and phrases far longer than one
window, so the quietest window near the target is a pause, not the middle of a word.
The levels are measured over the WAV a block at a time, so memory does not grow with
the length of the audio beyond 4 bytes per 20 ms.
"""

from __future__ import annotations

import itertools
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media.audio import read_frames

# Loudness is measured over 20 ms frames; a cut lands in the middle of the quietest
# run of this many frames (200 ms), so it sits inside a pause, not at its edge.
FRAME_SECONDS = 0.02
QUIET_RUN_FRAMES = 10
# Frames read from the WAV at a time (10 s).
BLOCK_FRAMES = 500


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk: [start, end) in samples and in seconds of the source."""

    index: int
    start_sample: int
    end_sample: int
    sample_rate_hz: int

    @property
    def start_seconds(self) -> float:
        return self.start_sample / self.sample_rate_hz

    @property
    def end_seconds(self) -> float:
        return self.end_sample / self.sample_rate_hz


def frame_energy(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Root-mean-square level of each 20 ms frame."""
    frame = max(1, int(sample_rate_hz * FRAME_SECONDS))
    usable = len(samples) // frame * frame
    frames = samples[:usable].astype(np.float32).reshape(-1, frame)
    return np.sqrt(np.mean(frames * frames, axis=1))


def wav_energy(wav: Path) -> tuple[np.ndarray, int, int]:
    """Level of each 20 ms frame of a 16-bit mono WAV, its sample count and its rate.

    Read a block at a time: memory is the levels (4 bytes per 20 ms: 4.3 MB for six
    hours), never the samples (a whole-track float copy of six hours is 1.4 GB).
    """
    parts = []
    with wave.open(str(wav), "rb") as handle:
        rate, total = handle.getframerate(), handle.getnframes()
        frame = max(1, int(rate * FRAME_SECONDS))
        for start in range(0, total, frame * BLOCK_FRAMES):
            parts.append(frame_energy(read_frames(handle, start, frame * BLOCK_FRAMES), rate))
    energy = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return energy, total, rate


def plan_chunks(wav: Path, *, target_seconds: float, search_seconds: float) -> list[ChunkSpan]:
    """Chunks of about ``target_seconds`` each, every cut in the quietest spot near the target."""
    energy, total, sample_rate_hz = wav_energy(wav)
    if total == 0:
        return []
    frame = max(1, int(sample_rate_hz * FRAME_SECONDS))
    # Sum of each run of QUIET_RUN_FRAMES frames starting at frame i.
    runs = np.convolve(energy, np.ones(QUIET_RUN_FRAMES), mode="valid") if len(energy) else energy
    cuts = [0]
    target = int(target_seconds * sample_rate_hz)
    search = int(search_seconds * sample_rate_hz)
    while total - cuts[-1] > target + search:
        ideal = cuts[-1] + target
        cuts.append(_quietest_cut(runs, frame, ideal - search, ideal + search))
    cuts.append(total)
    return [
        ChunkSpan(index, start, end, sample_rate_hz)
        for index, (start, end) in enumerate(itertools.pairwise(cuts))
    ]


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
