"""Keyframe and thumbnail images: JPEG bytes from a decoded frame."""

from __future__ import annotations

import cv2
import numpy as np

JPEG_QUALITY = 85


def encode_jpeg(image: np.ndarray, max_width: int | None = None) -> bytes:
    """JPEG bytes of a BGR image, scaled down to ``max_width`` when wider."""
    if max_width is not None and image.shape[1] > max_width:
        height = max(1, round(image.shape[0] * max_width / image.shape[1]))
        image = cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buffer.tobytes()
