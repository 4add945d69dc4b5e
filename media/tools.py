"""Where the FFmpeg binary is, and running it with errors that say what went wrong.

The platform uses imageio-ffmpeg's static build, so no system FFmpeg is needed and
every machine decodes with the same codecs. Error messages name files by their base
name only: they end up in a customer's failed job, which must not show server paths.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Generator, Iterable
from functools import lru_cache

import imageio_ffmpeg

from telemetry.redaction import public_message
from vidinsight.errors import StageTimeout, remaining_seconds

# Log lines kept for an error message.
_LOG_TAIL_LINES = 5


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped by imageio-ffmpeg."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


class FFmpegFailed(RuntimeError):
    """FFmpeg exited with an error; the message holds the tail of its log."""


def failure(code: int, log: Iterable[bytes]) -> FFmpegFailed:
    """FFmpegFailed with the last log lines, every server path in them cut to its name
    (the message reaches the job's customer)."""
    text = " | ".join(line.decode(errors="replace").strip() for line in log)
    return FFmpegFailed(f"ffmpeg exited {code}: {public_message(text)}")


def run_ffmpeg(args: list[str], timeout_seconds: float | None = None) -> None:
    """Run FFmpeg quietly with ``args``; FFmpegFailed with its last log lines on failure."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(command, capture_output=True, timeout=timeout_seconds, check=False)
    if done.returncode != 0:
        raise failure(done.returncode, done.stderr.splitlines()[-_LOG_TAIL_LINES:])


class _KillAt:
    """Kills a child process at a deadline from a timer thread: a decoder stuck on a
    hostile file writes nothing, so reading its output would otherwise wait for ever."""

    def __init__(self, process: subprocess.Popen[bytes], seconds: float | None) -> None:
        self.fired = False
        self._process = process
        self._timer = None if seconds is None else threading.Timer(seconds, self._kill)
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def _kill(self) -> None:
        self.fired = True
        self._process.kill()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def ffmpeg_output(
    args: list[str],
    block_bytes: int,
    *,
    what: str,
    deadline: float | None,
    loglevel: str = "error",
    on_log: Callable[[bytes], bool] | None = None,
) -> Generator[bytes, None, None]:
    """FFmpeg's standard output (``args`` must write to ``pipe:1``) in blocks of
    ``block_bytes`` (the last one may be shorter), so the caller holds one block at a time.

    Each log line goes to ``on_log`` (from a reader thread) first; the lines it does not
    take (returns False) are kept for the error message. FFmpeg is killed at ``deadline``
    (StageTimeout) and whenever the consumer stops early, and is always reaped, its pipes
    closed, before this returns or raises; a non-zero exit raises FFmpegFailed.

    A run that read all of the output and exited 0 succeeded, even when the deadline's
    timer fired between FFmpeg's exit and its reaping: the kill then met a finished
    process, and the work was done in time.
    """
    left = remaining_seconds(deadline, what)
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args]
    # Leaving the block closes both pipes (the log's once its reader has drained it).
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        watchdog = _KillAt(process, left)
        log: list[bytes] = []
        reader = threading.Thread(target=_read_log, args=(process.stderr, on_log, log), daemon=True)
        reader.start()
        try:
            while block := process.stdout.read(block_bytes):
                remaining_seconds(deadline, what)
                yield block
        except BaseException:  # the deadline passed or the consumer stopped: no more output
            process.kill()
            raise
        finally:
            watchdog.cancel()
            process.stdout.close()
            code = process.wait()
            reader.join()
    if code == 0:
        return
    if watchdog.fired:
        raise StageTimeout(f"{what}: deadline passed")
    raise failure(code, log[-_LOG_TAIL_LINES:])


def _read_log(
    stream: Iterable[bytes], on_log: Callable[[bytes], bool] | None, log: list[bytes]
) -> None:
    """Hand each log line to ``on_log``; keep the last lines it did not take."""
    for line in stream:
        if on_log is not None and on_log(line):
            continue
        log.append(line.strip())
        del log[:-20]
