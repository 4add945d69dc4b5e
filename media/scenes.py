"""Scene-cut detection on downscaled grey frames, and the sharpest frame of each scene.

FFmpeg decodes the video (multi-threaded) and scales every frame to a thumbnail-sized
grey image in the same process, so Python only ever sees a few thousand pixels per
frame and the pass runs near the speed of a plain decode. ``showinfo`` reports each
frame's timestamp, so variable frame rate is handled. A cut is a frame whose mean
absolute difference from the previous one is both large and far above the
differences around it, so motion inside a scene (steady, moderate differences) is
not mistaken for a cut. The keyframe of a scene is its sharpest frame by variance of
the Laplacian; only those few frames are then decoded again at full resolution.

Every step takes an optional ``deadline`` (a ``time.monotonic()`` instant): FFmpeg is
killed when it passes, and the Python loops over frames check it, so a hostile file
ends in StageTimeout instead of holding the handler.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from media.tools import FFmpegFailed, ffmpeg_exe
from vidinsight.errors import StageTimeout, remaining_seconds

# A cut's difference must exceed this many times the median difference around it.
LOCAL_RATIO = 3.0
LOCAL_WINDOW_FRAMES = 8
_PTS_TIME = re.compile(rb"pts_time:\s*(-?[0-9.eE+-]+)")


@dataclass
class Scene:
    """One scene: where it starts and ends, and its sharpest frame (BGR, full size)."""

    start_seconds: float
    end_seconds: float
    keyframe_seconds: float = 0.0
    keyframe: np.ndarray | None = field(default=None, repr=False)
    sharpness: float = -1.0


@dataclass
class SceneAnalysis:
    """Every cut (the start time of each scene after the first) and the scenes."""

    cuts: list[float]
    scenes: list[Scene]
    frames: int


def analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Frame size for analysis: ``target_width`` wide (or tall, for portrait), aspect kept."""
    longest = max(width, height)
    scale = target_width / longest
    return max(8, int(width * scale) // 2 * 2), max(8, int(height * scale) // 2 * 2)


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for crisp edges, low for blur."""
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def video_geometry(path: Path) -> tuple[int, int, float]:
    """Width, height and playing time of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        return stream.codec_context.width, stream.codec_context.height, duration


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


def grey_frames(
    path: Path,
    size: tuple[int, int],
    times: list[float],
    fast_decode: bool = True,
    *,
    deadline: float | None = None,
) -> Generator[np.ndarray, None, None]:
    """The frames of ``path`` as small grey images; ``times`` fills with their timestamps.

    ``fast_decode`` skips the deblocking filter (invisible once a frame is scaled down
    to a thumbnail) and frames no other frame refers to (B-frames, usually): a cut on
    such a frame is then seen on the next decoded one, a few frames (well under the
    0.5 s the issue allows) later, for about a third less decoding.

    FFmpeg is killed at ``deadline`` (StageTimeout), and whenever the consumer stops
    early, and is always reaped before this returns or raises.
    """
    what = f"decoding frames of {path.name}"
    left = remaining_seconds(deadline, what)
    width, height = size
    skips = ["-skip_loop_filter:v", "all", "-skip_frame:v", "noref"] if fast_decode else []
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", *skips, "-i", str(path),
        "-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
        "-vf", f"scale={width}:{height}:flags=area,format=gray,showinfo",
        "-f", "rawvideo", "pipe:1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    watchdog = _KillAt(process, left)
    log: list[bytes] = []
    reader = threading.Thread(target=_read_times, args=(process.stderr, times, log), daemon=True)
    reader.start()
    frame_bytes = width * height
    try:
        while chunk := process.stdout.read(frame_bytes):
            if len(chunk) < frame_bytes:
                break
            remaining_seconds(deadline, what)
            yield np.frombuffer(chunk, dtype=np.uint8).reshape(height, width)
    except BaseException:  # the deadline passed or the consumer stopped: no more frames
        process.kill()
        raise
    finally:
        watchdog.cancel()
        process.stdout.close()
        code = process.wait()
        reader.join()
    if watchdog.fired:
        raise StageTimeout(f"{what}: deadline passed")
    if code != 0:
        raise FFmpegFailed(
            f"ffmpeg exited {code}: {b' | '.join(log[-5:]).decode(errors='replace')}"
        )


def _read_times(stream: object, times: list[float], log: list[bytes]) -> None:
    """Collect showinfo's pts_time of each frame (and the last log lines, for errors)."""
    for line in stream:  # type: ignore[attr-defined]
        match = _PTS_TIME.search(line)
        if match and b"showinfo" in line:
            times.append(float(match.group(1)))
        else:
            log.append(line.strip())
            del log[:-20]


def detect_scenes(
    path: Path,
    *,
    frame_width: int = 96,
    cut_threshold: float = 20.0,
    min_scene_seconds: float = 0.6,
    keep_keyframes: bool = True,
    fast_decode: bool = True,
    deadline: float | None = None,
) -> SceneAnalysis:
    """Find the cuts and scenes of the first video stream of ``path`` by ``deadline``."""
    remaining_seconds(deadline, f"finding the scenes of {path.name}")
    width, height, duration = video_geometry(path)
    times: list[float] = []
    scores: list[float] = []
    sharp: list[float] = []
    previous: np.ndarray | None = None
    size = analysis_size(width, height, frame_width)
    for grey in grey_frames(path, size, times, fast_decode, deadline=deadline):
        current = grey.astype(np.int16)
        scores.append(0.0 if previous is None else float(np.abs(current - previous).mean()))
        sharp.append(sharpness(grey))
        previous = current
    times = times[: len(scores)]
    if not times:
        return SceneAnalysis(cuts=[], scenes=[], frames=0)
    cut_indexes = find_cuts(scores, times, cut_threshold, min_scene_seconds)
    scenes = _scenes(cut_indexes, times, sharp, duration or times[-1])
    if keep_keyframes:
        grab_keyframes(path, scenes, deadline=deadline)
    return SceneAnalysis(cuts=[times[i] for i in cut_indexes], scenes=scenes, frames=len(times))


def find_cuts(
    scores: list[float], times: list[float], threshold: float, min_scene_seconds: float
) -> list[int]:
    """Indexes of frames that start a new scene."""
    values = np.asarray(scores, dtype=np.float32)
    cuts: list[int] = []
    last_time = times[0] if times else 0.0
    for index in np.flatnonzero(values >= threshold):
        low = max(1, index - LOCAL_WINDOW_FRAMES)
        around = np.concatenate(
            [values[low:index], values[index + 1 : index + 1 + LOCAL_WINDOW_FRAMES]]
        )
        local = float(np.median(around)) if len(around) else 0.0
        if index == 0 or values[index] < LOCAL_RATIO * local:
            continue
        if times[index] - last_time < min_scene_seconds:
            continue
        cuts.append(int(index))
        last_time = times[index]
    return cuts


def _scenes(
    cut_indexes: list[int], times: list[float], sharp: list[float], duration: float
) -> list[Scene]:
    """Scenes between cuts, each knowing the time of its sharpest frame."""
    starts = [0, *cut_indexes]
    ends = [*cut_indexes, len(times)]
    scenes = []
    for first, stop in zip(starts, ends, strict=True):
        sharpest = first + int(np.argmax(sharp[first:stop]))
        scenes.append(
            Scene(
                start_seconds=0.0 if first == 0 else times[first],
                end_seconds=times[stop] if stop < len(times) else duration,
                keyframe_seconds=times[sharpest],
                sharpness=sharp[sharpest],
            )
        )
    return scenes


def grab_keyframes(path: Path, scenes: list[Scene], *, deadline: float | None = None) -> None:
    """Decode each scene's sharpest frame at full resolution (seek, then decode forward),
    checking ``deadline`` before every decoded frame (a long GOP decodes many)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for scene in scenes:
            scene.keyframe = _frame_at(container, stream, scene.keyframe_seconds, deadline)


def _frame_at(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    seconds: float,
    deadline: float | None,
) -> np.ndarray | None:
    """The first frame at or after ``seconds`` (within half a millisecond), as BGR."""
    assert stream.time_base is not None
    remaining_seconds(deadline, f"seeking to the keyframe at {seconds:.3f} s")
    container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
    last = None
    for frame in container.decode(stream):
        remaining_seconds(deadline, f"decoding the keyframe at {seconds:.3f} s")
        if frame.time is None:
            continue
        last = frame
        if frame.time >= seconds - 0.0005:
            break
    return None if last is None else last.to_ndarray(format="bgr24")
