"""Scene-cut detection on downscaled grey frames, and the sharpest frame of each scene.

One decoding pass with PyAV: each frame is scaled to a thumbnail-sized grey image
(a few thousand pixels), so comparing frames costs almost nothing next to decoding.
A cut is a frame whose mean absolute difference from the previous one is both large
and far above the differences around it, so motion inside a scene (steady, moderate
differences) is not mistaken for a cut. Frame times come from the stream, so
variable frame rate is handled. The keyframe of a scene is its sharpest frame by
variance of the Laplacian, kept at full resolution as the pass goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

# A cut's difference must exceed this many times the median difference around it.
LOCAL_RATIO = 3.0
LOCAL_WINDOW_FRAMES = 8


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


def detect_scenes(
    path: Path,
    *,
    frame_width: int = 96,
    cut_threshold: float = 20.0,
    min_scene_seconds: float = 0.6,
    keep_keyframes: bool = True,
) -> SceneAnalysis:
    """Find the cuts and scenes of the first video stream of ``path``."""
    times: list[float] = []
    scores: list[float] = []
    sharp: list[float] = []
    best: dict[int, tuple[float, float, np.ndarray]] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = analysis_size(stream.codec_context.width, stream.codec_context.height, frame_width)
        previous: np.ndarray | None = None
        for frame in container.decode(stream):
            grey = frame.reformat(width=size[0], height=size[1], format="gray").to_ndarray()
            grey16 = grey.astype(np.int16)
            scores.append(0.0 if previous is None else float(np.abs(grey16 - previous).mean()))
            previous = grey16
            times.append(float(frame.time) if frame.time is not None else len(times) / 25.0)
            sharp.append(sharpness(grey))
            if keep_keyframes:
                _keep_if_sharpest(best, frame, scores, times, sharp, cut_threshold)
        duration = _duration(container, times)
    cut_indexes = find_cuts(scores, times, cut_threshold, min_scene_seconds)
    return _scenes(cut_indexes, times, sharp, duration, best)


def find_cuts(
    scores: list[float], times: list[float], threshold: float, min_scene_seconds: float
) -> list[int]:
    """Indexes of frames that start a new scene."""
    values = np.asarray(scores, dtype=np.float32)
    cuts: list[int] = []
    last_time = times[0] if times else 0.0
    for index in range(1, len(values)):
        if values[index] < threshold:
            continue
        low = max(1, index - LOCAL_WINDOW_FRAMES)
        around = np.concatenate(
            [values[low:index], values[index + 1 : index + 1 + LOCAL_WINDOW_FRAMES]]
        )
        local = float(np.median(around)) if len(around) else 0.0
        if values[index] < LOCAL_RATIO * local:
            continue
        if times[index] - last_time < min_scene_seconds:
            continue
        cuts.append(index)
        last_time = times[index]
    return cuts


def _keep_if_sharpest(
    best: dict[int, tuple[float, float, np.ndarray]],
    frame: av.VideoFrame,
    scores: list[float],
    times: list[float],
    sharp: list[float],
    cut_threshold: float,
) -> None:
    """Keep a full-size copy of the sharpest frame of each stretch between large jumps.

    Cuts are only final after the pass, so frames are grouped by every jump above the
    threshold (a superset of the cuts); each scene later takes the sharpest of its groups.
    """
    index = len(scores) - 1
    if index == 0 or scores[index] >= cut_threshold:
        best[index] = (sharp[index], times[index], frame.to_ndarray(format="bgr24"))
        return
    group = max(best)
    if sharp[index] > best[group][0]:
        best[group] = (sharp[index], times[index], frame.to_ndarray(format="bgr24"))


def _scenes(
    cut_indexes: list[int],
    times: list[float],
    sharp: list[float],
    duration: float,
    best: dict[int, tuple[float, float, np.ndarray]],
) -> SceneAnalysis:
    """Scenes between cuts, each with its sharpest frame."""
    if not times:
        return SceneAnalysis(cuts=[], scenes=[], frames=0)
    starts = [0, *cut_indexes]
    ends = [*cut_indexes, len(times)]
    scenes = []
    for first, stop in zip(starts, ends, strict=True):
        scene = Scene(
            start_seconds=0.0 if first == 0 else times[first],
            end_seconds=times[stop] if stop < len(times) else duration,
        )
        for group in (g for g in best if first <= g < stop):
            score, when, image = best[group]
            if score > scene.sharpness:
                scene.sharpness, scene.keyframe_seconds, scene.keyframe = score, when, image
        if scene.keyframe is None:  # keyframes not kept: still report the sharpest time
            sharpest = first + int(np.argmax(sharp[first:stop]))
            scene.keyframe_seconds, scene.sharpness = times[sharpest], sharp[sharpest]
        scenes.append(scene)
    return SceneAnalysis(cuts=[times[i] for i in cut_indexes], scenes=scenes, frames=len(times))


def _duration(container: av.container.InputContainer, times: list[float]) -> float:
    """Playing time: the container's, or the last frame's time when it declares none."""
    if container.duration:
        return float(container.duration / av.time_base)
    return times[-1] if times else 0.0
