"""Keyframe images: each scene's sharpest frame, decoded, scaled down and handed on at once.

A long video has hundreds of scenes; holding their keyframes at full resolution (6 MB
each at 1080p, 100 MB at 8K) until all were found grew memory with the video's length.
So each keyframe is scaled to a bounded width while it is converted from the decoder's
picture (never materialised at full size as BGR) and yielded before the next one is
decoded: the caller encodes and stores it, and memory holds one keyframe at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from media.probe import check_picture
from media.scenes import Scene
from vidinsight.errors import remaining_seconds

JPEG_QUALITY = 85


def keyframes(
    path: Path,
    scenes: list[Scene],
    *,
    max_width: int,
    max_pixels: int,
    deadline: float | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(scene index, BGR image at most ``max_width`` wide) of each scene's keyframe, in turn.

    The decoder refuses pictures of more than ``max_pixels`` before allocating them
    (picture_too_large), whatever the stream's headers said. ``deadline`` is checked
    before every decoded frame (a long GOP decodes many).
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"max_pixels": str(max_pixels)}
        # One thread: a worker's handlers are its parallelism, and the decoder's frame
        # threads cost more CPU per keyframe than they save in time.
        stream.codec_context.thread_count = 1
        for index, scene in enumerate(scenes):
            try:
                frame = _frame_at(container, stream, scene.keyframe_seconds, deadline)
            except av.error.FFmpegError:
                # A refused picture: the codec context holds the size it would have had.
                context = stream.codec_context
                check_picture(context.width, context.height, max_pixels)
                raise
            if frame is not None:
                yield index, _scaled(frame, max_width)


def _frame_at(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    seconds: float,
    deadline: float | None,
) -> av.VideoFrame | None:
    """The first frame at or after ``seconds`` (within half a millisecond)."""
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
    return last


def _scaled(frame: av.VideoFrame, max_width: int) -> np.ndarray:
    """The frame as BGR, scaled (area filter) to at most ``max_width`` wide, aspect kept."""
    width = min(frame.width, max_width)
    height = max(1, round(frame.height * width / frame.width))
    return frame.to_ndarray(width=width, height=height, format="bgr24", interpolation="AREA")


def encode_jpeg(image: np.ndarray, max_width: int | None = None) -> bytes:
    """JPEG bytes of a BGR image, scaled down to ``max_width`` when wider."""
    if max_width is not None and image.shape[1] > max_width:
        height = max(1, round(image.shape[0] * max_width / image.shape[1]))
        image = cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buffer.tobytes()
