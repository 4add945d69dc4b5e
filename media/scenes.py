"""Scene-cut detection on downscaled grey frames, and the sharpest frame of each scene.

FFmpeg decodes the video and scales every frame to a thumbnail-sized grey image in the
same process, so Python only ever sees a few thousand pixels per frame; the decoder
skips what the decision does not need (``grey_frames``), so the pass takes under half
the CPU of a plain decode. ``showinfo`` reports each frame's timestamp, so variable
frame rate is handled. A cut is a frame whose mean absolute difference from the previous
one is both large and far above the differences around it, so motion inside a scene
(steady, moderate differences) is not mistaken for a cut. The keyframe of a scene is
its sharpest frame by variance of the Laplacian; only those few frames are then decoded
again (``media.keyframes``).

Every step takes an optional ``deadline`` (a ``time.monotonic()`` instant): FFmpeg is
killed when it passes, and the Python loops over frames check it, so a hostile file
ends in StageTimeout instead of holding the handler. The media is measured as it is
decoded, not believed: past ``max_seconds`` of frame timestamps the pass stops with
too_long, and the decoder refuses any picture over ``max_pixels`` before allocating it
(picture_too_large), whatever the container declared. Per frame only three numbers
are kept (8 bytes each), so memory barely grows with the video's length.

A long video is shared by several workers as time segments, each analysed alone
(``start_seconds``, ``end_seconds``): FFmpeg seeks in the input and decodes only the
segment and CONTEXT_SECONDS either side, times stay on the video's timeline, and only
the cuts inside the segment are reported, each decided as the whole-file pass decides
it. A segment's scenes are pieces clipped to it; ``join_pieces`` glues the pieces of all
segments back into the whole file's scenes.
"""

from __future__ import annotations

import math
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Generator, MutableSequence, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from functools import partial
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
# Seconds decoded either side of a segment, so that every decision inside it sees what
# the whole-file pass sees: a frame's cut test looks LOCAL_WINDOW_FRAMES frames either
# side (0.6 s at 15 fps, 4.5 s at 2 fps) and min_scene_seconds (0.6 s) back to
# the cut before. Ten seconds covers both down to about one frame a second, with room
# for a few candidates in a row, for 20 s of extra decoding on segments of minutes. A
# window that cannot prove its decisions (too few frames, or candidates closer than
# min_scene_seconds all the way back, as under a strobe) is widened WIDEN times on that
# side and decoded again, at worst up to the whole file.
CONTEXT_SECONDS = 10.0
WIDEN = 4.0
# One decoding thread and one filtering thread. The scene branch's parallelism is its
# workers and segments, each worker on one core (its pod's CPU limit), while FFmpeg's
# automatic count is the node's cores plus one: frame threads decode the same frames for
# about a sixth more CPU, and filter threads add about as much CPU as scaling frames
# this small does (bench/media.py part S).
_SINGLE_THREADED = ["-threads", "1", "-filter_threads", "1"]
_PTS_TIME = re.compile(rb"pts_time:\s*(-?[0-9.eE+-]+)")
_PTS = re.compile(rb"\bpts:\s*(-?[0-9]+)\s")
# What FFmpeg logs when a decoder refuses a picture over its -max_pixels.
_OVERSIZE = re.compile(rb"Picture size (\d+)x(\d+) exceeds specified max pixel count")


@dataclass
class Scene:
    """One scene: where it starts and ends, and when its sharpest frame is."""

    start_seconds: float
    end_seconds: float
    keyframe_seconds: float = 0.0
    sharpness: float = -1.0
    # False for a segment's piece that starts at the segment's border, not at a cut (nor
    # at 0): it goes on with the scene of the segment before (``join_pieces``).
    opens_with_cut: bool = True


@dataclass
class SceneAnalysis:
    """The cuts in the segment analysed (each the start of a scene), its scenes (pieces
    of scenes, for a segment of a longer video), and how many frames were decoded."""

    cuts: list[float]
    scenes: list[Scene]
    frames: int


@dataclass
class _Frames:
    """What is kept of each decoded frame: its time on the video's timeline, its mean
    difference from the frame before, its sharpness."""

    times: array[float] = field(default_factory=lambda: array("d"))
    scores: array[float] = field(default_factory=lambda: array("d"))
    sharp: array[float] = field(default_factory=lambda: array("d"))

    def span(self, start: float, end: float | None) -> range:
        """Indexes of the frames in [start, end); from the first frame when start is 0,
        as the whole-file pass counts them."""
        first = bisect_left(self.times, start) if start > 0 else 0
        stop = len(self.times) if end is None else bisect_left(self.times, end)
        return range(first, max(first, stop))


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
    seek_seconds: float = 0.0,
    limit_seconds: float | None = None,
) -> Generator[np.ndarray, None, None]:
    """The frames of ``path`` as small grey images; ``times`` fills with their timestamps.

    Only the frames from ``seek_seconds`` to ``limit_seconds`` (None: the end; a frame
    right at the limit comes too) are decoded: FFmpeg seeks in the input to the keyframe
    before the seek and drops the frames before it. Their times are those a pass from
    the start gives the same frames (``_timeline_shift``).

    ``fast_decode`` skips the deblocking filter (invisible once a frame is scaled down
    to a thumbnail) and frames no other frame refers to (B-frames, usually): a cut on
    such a frame is then seen on the next decoded one, a few frames (well under the
    0.5 s the issue allows) later, for less than half the decoding. Nothing more can be
    skipped safely: a reference B-frame may be a P-frame's reference (x264 above
    ``veryfast``), HEVC codes most frames as B, and keyframes alone place a cut wherever
    the encoder put the next one, seconds late without scene-cut keyframes. Scaling is
    ``area``: point-like scalers alias fine detail into differences that look like cuts.

    With ``max_pixels`` the decoder refuses bigger pictures unallocated and the frames
    end in PermanentError(picture_too_large). FFmpeg is killed at ``deadline``
    (StageTimeout), and whenever the consumer stops early, and is always reaped.
    """
    width, height = size
    skips = ["-skip_loop_filter:v", "all", "-skip_frame:v", "noref"] if fast_decode else []
    limits = [] if max_pixels is None else ["-max_pixels", str(max_pixels)]
    decoding = [*_SINGLE_THREADED, *skips, *limits]
    window, shift = [], ""
    if seek_seconds > 0:
        window = ["-copyts", "-ss", f"{seek_seconds:.6f}"]
        shift = f"setpts=PTS{-_timeline_shift(path, decoding, deadline):+d},"
    if limit_seconds is not None:
        window += ["-t", f"{limit_seconds - seek_seconds:.6f}"]
    args = [
        *decoding, *window, "-i", str(path),
        "-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
        "-vf", f"{shift}scale={width}:{height}:flags=area,format=gray,showinfo",
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


def _timeline_shift(path: Path, decoding: list[str], deadline: float | None) -> int:
    """Ticks from the stream's own timestamps to the times a pass from the start reports.

    A pass from the start shifts timestamps to the container's start (MPEG-TS, whose
    clocks may jump, by rules of its own), and a seeking pass shifts them otherwise. So
    a seeking pass keeps the stream's timestamps (-copyts) and takes off this shift,
    measured on the first frame decoded both ways; showinfo then prints, digit for digit,
    what it prints in the whole-file pass. If the first frame cannot be decoded, no
    shift: the segment holding it fails on it anyway.
    """
    first = [_first_pts(path, [*decoding, *copyts], deadline) for copyts in (["-copyts"], [])]
    return first[0] - first[1] if first[0] is not None and first[1] is not None else 0


def _first_pts(path: Path, before_input: list[str], deadline: float | None) -> int | None:
    """showinfo's pts (in ticks) of the first frame FFmpeg decodes with ``before_input``."""
    found: list[int] = []

    def on_log(line: bytes) -> bool:
        if (match := _PTS.search(line)) and b"showinfo" in line:
            found.append(int(match.group(1)))
            return True
        return False

    args = [
        *before_input, "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn",
        "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-",
    ]  # fmt: skip
    output = ffmpeg_output(
        args, 1 << 16, what=f"timing the first frame of {path.name}", deadline=deadline,
        loglevel="info", on_log=on_log,
    )  # fmt: skip
    with suppress(FFmpegFailed):
        for _ in output:
            pass
    return found[0] if found else None


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
    start_seconds: float = 0.0,
    end_seconds: float | None = None,
) -> SceneAnalysis:
    """Find the cuts and scenes of the first video stream of ``path`` by ``deadline``;
    too_long as soon as the frames read pass ``max_seconds`` (on the video's timeline).

    Only the segment [``start_seconds``, ``end_seconds``) is analysed (None: to the end):
    its cuts, decided as in a whole-file pass, and its scenes clipped to it (pieces, see
    ``join_pieces``). The defaults analyse the whole file.
    """
    remaining_seconds(deadline, f"finding the scenes of {path.name}")
    width, height, duration = video_geometry(path)
    decode = partial(
        _decode, path, analysis_size(width, height, frame_width), fast_decode=fast_decode,
        max_seconds=max_seconds, max_pixels=max_pixels, deadline=deadline, declared=duration,
    )  # fmt: skip
    segment = (start_seconds, end_seconds)
    frames, span, candidates = _segment_frames(
        decode, segment, duration, cut_threshold, min_scene_seconds
    )
    cut_indexes = [i for i in _spaced(candidates, frames.times, min_scene_seconds) if i in span]
    end = end_seconds if end_seconds is not None else max([duration, *frames.times[-1:]])
    return SceneAnalysis(
        cuts=[frames.times[i] for i in cut_indexes],
        scenes=_pieces(cut_indexes, frames, span, start_seconds, end),
        frames=len(frames.times),
    )


def _decode(
    path: Path,
    size: tuple[int, int],
    seek_seconds: float,
    limit_seconds: float | None,
    *,
    fast_decode: bool,
    max_seconds: float,
    max_pixels: int | None,
    deadline: float | None,
    declared: float,
) -> _Frames:
    """The frames from ``seek_seconds`` to ``limit_seconds`` (None: the end), measured as
    they come: too_long once a frame's time passes ``max_seconds``."""
    found = _Frames()
    previous: np.ndarray | None = None
    frames = grey_frames(
        path, size, found.times, fast_decode, max_pixels=max_pixels, deadline=deadline,
        seek_seconds=seek_seconds, limit_seconds=limit_seconds,
    )  # fmt: skip
    with closing(frames):
        for grey in frames:
            if found.times and found.times[-1] > max_seconds:
                raise too_long(found.times[-1], max_seconds, declared)
            current = grey.astype(np.int16)
            score = 0.0 if previous is None else float(np.abs(current - previous).mean())
            found.scores.append(score)
            found.sharp.append(sharpness(grey))
            previous = current
    del found.times[len(found.scores) :]
    return found


def _segment_frames(
    decode: Callable[[float, float | None], _Frames],
    segment: tuple[float, float | None],
    duration: float,
    threshold: float,
    min_scene_seconds: float,
) -> tuple[_Frames, range, list[int]]:
    """The frames around ``segment``, the indexes of those inside it, and the candidate
    cuts: CONTEXT_SECONDS either side, each side widened until it proves the decisions.

    A window from 0 proves the start, as one to the end of the file (taken when its limit
    would reach the declared duration) proves the end; so the widening ends.
    """
    start, end = segment
    before = after = CONTEXT_SECONDS
    while True:
        seek = max(0.0, start - before)
        limit = None if end is None or end + after >= duration else end + after
        frames = decode(seek, limit)
        span = frames.span(start, end)
        candidates = _candidates(frames.scores, threshold)
        start_proved = seek == 0 or _start_proved(candidates, frames.times, span, min_scene_seconds)
        end_proved = limit is None or len(frames.times) - span.stop >= LOCAL_WINDOW_FRAMES
        if start_proved and (end_proved or not span):
            return frames, span, candidates
        before *= 1.0 if start_proved else WIDEN
        after *= 1.0 if end_proved else WIDEN


def _start_proved(
    candidates: list[int], times: Sequence[float], span: range, min_scene_seconds: float
) -> bool:
    """Whether a window that began after the file's start decides the cuts in ``span`` as
    the whole-file pass does.

    The window's first LOCAL_WINDOW_FRAMES + 1 frames lack the neighbours the cut test
    looks at, so they may be candidates here and not there, or the reverse. A later
    candidate min_scene_seconds past both them and the candidate before it is a cut in
    both passes, and from it on both decide alike: the span is proved if such an anchor
    comes no later than its first candidate, or it has no candidate. A window whose
    first frame comes after ``start`` (a seek that overshot) proves nothing.
    """
    blind = LOCAL_WINDOW_FRAMES + 1
    if span.start < blind:
        return False
    previous = times[blind - 1]
    for index in candidates:
        if index >= span.stop:
            break
        if index >= blind and times[index] - previous >= min_scene_seconds:
            return True
        if index >= span.start:
            return False
        previous = max(previous, times[index])
    return True


def find_cuts(
    scores: Sequence[float], times: Sequence[float], threshold: float, min_scene_seconds: float
) -> list[int]:
    """Indexes of frames that start a new scene."""
    return _spaced(_candidates(scores, threshold), times, min_scene_seconds)


def _candidates(scores: Sequence[float], threshold: float) -> list[int]:
    """Indexes of frames whose difference passes ``threshold`` and stands LOCAL_RATIO
    times above the median around it: cuts, unless one came too shortly before."""
    values = np.asarray(scores, dtype=np.float32)
    found: list[int] = []
    for above in np.flatnonzero(values >= threshold):
        index = int(above)
        low = max(1, index - LOCAL_WINDOW_FRAMES)
        around = np.concatenate(
            [values[low:index], values[index + 1 : index + 1 + LOCAL_WINDOW_FRAMES]]
        )
        local = float(np.median(around)) if len(around) else 0.0
        if index > 0 and values[index] >= LOCAL_RATIO * local:
            found.append(index)
    return found


def _spaced(candidates: list[int], times: Sequence[float], min_scene_seconds: float) -> list[int]:
    """The candidates that come at least ``min_scene_seconds`` after the cut before (or
    the first frame): the cuts."""
    cuts: list[int] = []
    last_time = times[0] if times else 0.0
    for index in candidates:
        if times[index] - last_time >= min_scene_seconds:
            cuts.append(index)
            last_time = times[index]
    return cuts


def _pieces(
    cut_indexes: list[int], frames: _Frames, span: range, start: float, end: float
) -> list[Scene]:
    """The scenes clipped to the segment [start, end) whose frames are ``span``: each
    piece from a cut (or the segment's start) to the next (or the segment's end), its
    keyframe the sharpest of its own frames. A stretch from the border to a cut that
    holds no frame makes no piece."""
    if not span:
        return []
    heads = sorted({span.start, *cut_indexes})
    cuts = set(cut_indexes)
    pieces = []
    for head, tail in zip(heads, [*heads[1:], span.stop], strict=True):
        sharpest = head + int(np.argmax(frames.sharp[head:tail]))
        at_cut = head in cuts
        pieces.append(
            Scene(
                start_seconds=frames.times[head] if at_cut else start,
                end_seconds=frames.times[tail] if tail < span.stop else end,
                keyframe_seconds=frames.times[sharpest],
                sharpness=frames.sharp[sharpest],
                opens_with_cut=at_cut or start <= 0,
            )
        )
    return pieces
