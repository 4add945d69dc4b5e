"""Audio extraction: any input to 16 kHz mono PCM, the format speech models take.

FFmpeg does the decoding, downmixing (5.1 included) and resampling in one pass and
streams the samples to this process, which writes them to a WAV file a block at a time
and counts them: the audio's length is what was decoded, not what the container
declares, and extraction stops with too_long the moment it passes the maximum. Nothing
here holds more than one block of samples, whatever the length of the media.
"""

from __future__ import annotations

import math
import wave
from contextlib import closing
from pathlib import Path

import numpy as np

from media.probe import too_long
from media.tools import ffmpeg_output
from vidinsight.errors import remaining_seconds

SAMPLE_RATE_HZ = 16_000
SAMPLE_BYTES = 2
# FFmpeg's samples are taken a second (32 KB) at a time.
BYTES_PER_SECOND = SAMPLE_RATE_HZ * SAMPLE_BYTES


def extract_audio(
    source: Path,
    target: Path,
    *,
    start_seconds: float = 0.0,
    duration_seconds: float | None = None,
    deadline: float | None = None,
    max_seconds: float = math.inf,
    declared_seconds: float = 0.0,
) -> Path:
    """Write the first audio stream of ``source`` to ``target`` as 16 kHz mono 16-bit WAV.

    Only ``duration_seconds`` (None: to the end) from ``start_seconds`` of the media when
    given: FFmpeg seeks there and trims to the sample, so one worker can take one segment
    of a long video. PermanentError(too_long) as soon as the audio reaches past
    ``max_seconds`` of the media's time (the start plus what was decoded), whichever
    segment is extracted (``declared_seconds``, what the file claimed, goes into the
    message). FFmpeg is killed at ``deadline`` (a ``time.monotonic()`` instant,
    StageTimeout), so a hostile file cannot hold the handler past it.
    """
    window = [] if start_seconds == 0 else ["-ss", f"{start_seconds:.6f}"]
    if duration_seconds is not None:
        window += ["-t", f"{duration_seconds:.6f}"]
    args = [
        "-threads", "0",
        *window,
        "-i", str(source),
        "-map", "0:a:0",
        "-vn", "-sn", "-dn",
        "-ac", "1",
        "-ar", str(SAMPLE_RATE_HZ),
        "-c:a", "pcm_s16le",
        "-f", "s16le",
        "pipe:1",
    ]  # fmt: skip
    what = f"extracting audio from {source.name}"
    remaining_seconds(deadline, what)  # before the target is created
    written = 0
    with (
        wave.open(str(target), "wb") as handle,
        closing(ffmpeg_output(args, BYTES_PER_SECOND, what=what, deadline=deadline)) as blocks,
    ):
        handle.setnchannels(1)
        handle.setsampwidth(SAMPLE_BYTES)
        handle.setframerate(SAMPLE_RATE_HZ)
        for block in blocks:
            written += len(block)
            reached = start_seconds + written / BYTES_PER_SECOND
            if reached > max_seconds:  # closing the blocks kills FFmpeg
                raise too_long(reached, max_seconds, declared_seconds)
            handle.writeframes(block)
    return target


def read_wav(path: Path) -> np.ndarray:
    """The samples of a 16-bit mono WAV as int16 (whole: for short files)."""
    with wave.open(str(path), "rb") as handle:
        return read_frames(handle, 0, handle.getnframes())


def read_frames(handle: wave.Wave_read, start: int, count: int) -> np.ndarray:
    """``count`` samples from ``start`` of an open 16-bit mono WAV, as int16."""
    if handle.getsampwidth() != SAMPLE_BYTES or handle.getnchannels() != 1:
        raise ValueError("the WAV file is not 16-bit mono PCM")
    handle.setpos(start)
    return np.frombuffer(handle.readframes(count), dtype=np.int16)


def copy_span(source: Path, start: int, end: int, target: Path) -> Path:
    """Samples [start, end) of the WAV ``source`` as the WAV ``target`` (one chunk's worth
    in memory, never the whole track)."""
    with wave.open(str(source), "rb") as handle:
        samples = read_frames(handle, start, end - start)
        rate = handle.getframerate()
    return write_wav(target, samples, rate)


def write_wav(path: Path, samples: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Path:
    """Write int16 mono ``samples`` as a WAV file."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(SAMPLE_BYTES)
        handle.setframerate(sample_rate_hz)
        handle.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    return path
