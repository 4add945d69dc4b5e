"""Audio extraction: any input to 16 kHz mono PCM, the format speech models take.

FFmpeg does the decoding, downmixing (5.1 included) and resampling in one pass; the
result is a plain WAV that chunking reads into memory as 16-bit samples.
"""

from __future__ import annotations

import subprocess
import time
import wave
from pathlib import Path

import numpy as np

from media.tools import run_ffmpeg
from vidinsight.errors import StageTimeout, remaining_seconds

SAMPLE_RATE_HZ = 16_000


def extract_audio(
    source: Path,
    target: Path,
    timeout_seconds: float | None = None,
    *,
    deadline: float | None = None,
) -> Path:
    """Write the first audio stream of ``source`` to ``target`` as 16 kHz mono 16-bit WAV.

    FFmpeg gets the smaller of ``timeout_seconds`` and the time left before ``deadline``
    (a ``time.monotonic()`` instant); on expiry it is killed and reaped (``subprocess.run``
    does both) and, when the deadline is what ran out, StageTimeout is raised, so a
    hostile file cannot hold the handler past its deadline.
    """
    what = f"extracting audio from {source.name}"
    limits = [t for t in (timeout_seconds, remaining_seconds(deadline, what)) if t is not None]
    try:
        run_ffmpeg(
            [
                "-threads", "0",
                "-i", str(source),
                "-map", "0:a:0",
                "-vn", "-sn", "-dn",
                "-ac", "1",
                "-ar", str(SAMPLE_RATE_HZ),
                "-c:a", "pcm_s16le",
                "-f", "wav",
                str(target),
            ],
            timeout_seconds=min(limits, default=None),
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        if deadline is not None and time.monotonic() >= deadline:
            raise StageTimeout(f"{what}: deadline passed") from exc
        raise
    return target


def read_wav(path: Path) -> np.ndarray:
    """The samples of a 16-bit mono WAV as int16."""
    with wave.open(str(path), "rb") as handle:
        if handle.getsampwidth() != 2 or handle.getnchannels() != 1:
            raise ValueError(f"{path} is not 16-bit mono PCM")
        frames = handle.readframes(handle.getnframes())
    return np.frombuffer(frames, dtype=np.int16)


def write_wav(path: Path, samples: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Path:
    """Write int16 mono ``samples`` as a WAV file."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate_hz)
        handle.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    return path
