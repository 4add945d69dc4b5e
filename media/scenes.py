"""Scene-cut detection on downscaled grey frames, and the sharpest frame of each scene.

FFmpeg decodes the video (multi-threaded) and scales every frame to a thumbnail-sized
grey image in the same process, so Python only ever sees a few thousand pixels per
frame and the pass runs near the speed of a plain decode. ``showinfo`` reports each
frame's timestamp, so variable frame rate is handled. A cut is a frame whose mean
absolute difference from the previous one is both large and far above the
differences around it, so motion inside a scene (steady, moderate differences) is
not mistaken for a cut. The keyframe of a scene is its sharpest frame by variance of
the Laplacian; only those few frames are then decoded again (``media.keyframes``).

Every step takes an optional ``deadline`` (a ``time.monotonic()`` instant): FFmpeg is
killed when it passes, and the Python loops over frames check it, so a hostile file
ends in StageTimeout instead of holding the handler. The media is measured as it is
decoded, not believed: past ``max_seconds`` of frame timestamps the pass stops with
too_long, and the decoder refuses any picture over ``max_pixels`` before allocating it
(picture_too_large), whatever the container declared. Per frame only three numbers
are kept (8 bytes each), so memory barely grows with the video's length.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Generator, MutableSequence, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from media.probe import check_picture, too_long
from media.tools import FFmpegFailed, ffmpeg_output
from vidinsight.errors import remaining_seconds

# A cut's difference must exceed this many times the median difference around it.
LOCAL_RATIO = 3.0
LOCAL_WINDOW_FRAMES = 8
_PTS_TIME = re.compile(rb"pts_time:\s*(-?[0-9.eE+-]+)")
# What FFmpeg logs when a decoder refuses a picture over its -max_pixels.
_OVERSIZE = re.compile(rb"Picture size (\d+)x(\d+) exceeds specified max pixel count")


@dataclass
class Scene:
    """One scene: where it starts and ends, and when its sharpest frame is."""

    start_seconds: float
    end_seconds: float
    keyframe_seconds: float = 0.0
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


def grey_frames(
    path: Path,
    size: tuple[int, int],
    times: MutableSequence[float],
    fast_decode: bool = True,
    *,
    max_pixels: int | None = None,
    deadline: float | None = None,
) -> Generator[np.ndarray, None, None]:
    """The frames of ``path`` as small grey images; ``times`` fills with their timestamps.

    ``fast_decode`` skips the deblocking filter (invisible once a frame is scaled down
    to a thumbnail) and frames no other frame refers to (B-frames, usually): a cut on
    such a frame is then seen on the next decoded one, a few frames (well under the
    0.5 s the issue allows) later, for about a third less decoding.

    With ``max_pixels`` the decoder refuses bigger pictures unallocated and the frames
    end in PermanentError(picture_too_large). FFmpeg is killed at ``deadline``
    (StageTimeout), and whenever the consumer stops early, and is always reaped.
    """
    width, height = size
    skips = ["-skip_loop_filter:v", "all", "-skip_frame:v", "noref"] if fast_decode else []
    limit = [] if max_pixels is None else ["-max_pixels", str(max_pixels)]
    args = [
        *skips, *limit, "-i", str(path),
        "-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
        "-vf", f"scale={width}:{height}:flags=area,format=gray,showinfo",
        "-f", "rawvideo", "pipe:1",
    ]  # fmt: skip
    oversize: list[tuple[int, int]] = []

    def on_log(line: bytes) -> bool:
        """Take showinfo's pts_time of each frame, and note a refused picture."""
        if (match := _PTS_TIME.search(line)) and b"showinfo" in line:
            times.append(float(match.group(1)))
            return True
        if refused := _OVERSIZE.search(line):
            oversize.append((int(refused.group(1)), int(refused.group(2))))
        return False

    frame_bytes = width * height
    blocks = ffmpeg_output(
        args, frame_bytes, what=f"decoding frames of {path.name}", deadline=deadline,
        loglevel="info", on_log=on_log,
    )  # fmt: skip
    try:
        with closing(blocks):
            for chunk in blocks:
                if oversize:
                    break
                if len(chunk) == frame_bytes:
                    yield np.frombuffer(chunk, dtype=np.uint8).reshape(height, width)
    except FFmpegFailed:
        _refuse_oversize(oversize, max_pixels)
        raise
    _refuse_oversize(oversize, max_pixels)


def _refuse_oversize(oversize: list[tuple[int, int]], max_pixels: int | None) -> None:
    """picture_too_large for the first picture the decoder refused, if it refused one."""
    if oversize and max_pixels is not None:
        check_picture(*oversize[0], max_pixels)


def detect_scenes(
    path: Path,
    *,
    frame_width: int = 96,
    cut_threshold: float = 20.0,
    min_scene_seconds: float = 0.6,
    fast_decode: bool = True,
    max_seconds: float = math.inf,
    max_pixels: int | None = None,
    deadline: float | None = None,
) -> SceneAnalysis:
    """Find the cuts and scenes of the first video stream of ``path`` by ``deadline``;
    too_long as soon as the frames read pass ``max_seconds``."""
    remaining_seconds(deadline, f"finding the scenes of {path.name}")
    width, height, duration = video_geometry(path)
    times: array[float] = array("d")
    scores: array[float] = array("d")
    sharp: array[float] = array("d")
    previous: np.ndarray | None = None
    size = analysis_size(width, height, frame_width)
    frames = grey_frames(path, size, times, fast_decode, max_pixels=max_pixels, deadline=deadline)
    with closing(frames):
        for grey in frames:
            if times and times[-1] > max_seconds:
                raise too_long(times[-1], max_seconds, duration)
            current = grey.astype(np.int16)
            scores.append(0.0 if previous is None else float(np.abs(current - previous).mean()))
            sharp.append(sharpness(grey))
            previous = current
    times = times[: len(scores)]
    if not times:
        return SceneAnalysis(cuts=[], scenes=[], frames=0)
    cut_indexes = find_cuts(scores, times, cut_threshold, min_scene_seconds)
    scenes = _scenes(cut_indexes, times, sharp, max(duration, times[-1]))
    return SceneAnalysis(cuts=[times[i] for i in cut_indexes], scenes=scenes, frames=len(times))


def find_cuts(
    scores: Sequence[float], times: Sequence[float], threshold: float, min_scene_seconds: float
) -> list[int]:
    """Indexes of frames that start a new scene."""
    values = np.asarray(scores, dtype=np.float32)
    cuts: list[int] = []
    last_time = times[0] if times else 0.0
    for found in np.flatnonzero(values >= threshold):
        index = int(found)
        low = max(1, index - LOCAL_WINDOW_FRAMES)
        around = np.concatenate(
            [values[low:index], values[index + 1 : index + 1 + LOCAL_WINDOW_FRAMES]]
        )
        local = float(np.median(around)) if len(around) else 0.0
        if index == 0 or values[index] < LOCAL_RATIO * local:
            continue
        if times[index] - last_time < min_scene_seconds:
            continue
        cuts.append(index)
        last_time = times[index]
    return cuts


def _scenes(
    cut_indexes: list[int], times: Sequence[float], sharp: Sequence[float], duration: float
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
