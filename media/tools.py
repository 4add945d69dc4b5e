"""Where the FFmpeg binary is, and running it with errors that say what went wrong.

The platform uses imageio-ffmpeg's static build, so no system FFmpeg is needed and
every machine decodes with the same codecs.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache

import imageio_ffmpeg


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped by imageio-ffmpeg."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


class FFmpegFailed(RuntimeError):
    """FFmpeg exited with an error; the message holds the tail of its log."""


def run_ffmpeg(args: list[str], timeout_seconds: float | None = None) -> None:
    """Run FFmpeg quietly with ``args``; FFmpegFailed with its last log lines on failure."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(command, capture_output=True, timeout=timeout_seconds, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise FFmpegFailed(f"ffmpeg exited {done.returncode}: {' | '.join(tail)}")
