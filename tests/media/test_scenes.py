"""Scene cuts on the generated talk: found within 0.5 s, sharpest frame as keyframe."""

from __future__ import annotations

import cv2
import numpy as np

from media.keyframes import encode_jpeg, keyframes
from media.scenes import analysis_size, detect_scenes
from tests.fixtures.media import BLURRED_SCENE, BLURRED_SECONDS, GeneratedMedia

TOLERANCE_SECONDS = 0.5


def match_cuts(found: list[float], truth: list[float]) -> tuple[float, float]:
    """Precision and recall: each true cut matches at most one found cut within tolerance."""
    unmatched = list(truth)
    hits = 0
    for cut in found:
        near = [t for t in unmatched if abs(t - cut) <= TOLERANCE_SECONDS]
        if near:
            unmatched.remove(near[0])
            hits += 1
    return hits / max(1, len(found)), hits / max(1, len(truth))


def test_cuts_found_within_half_a_second(generated_media: GeneratedMedia) -> None:
    analysis = detect_scenes(generated_media.video)
    assert len(generated_media.cut_times) >= 5
    assert generated_media.duration_seconds >= 180
    precision, recall = match_cuts(analysis.cuts, generated_media.cut_times)
    assert precision >= 0.9, (analysis.cuts, generated_media.cut_times)
    assert recall >= 0.9, (analysis.cuts, generated_media.cut_times)
    assert len(analysis.scenes) == len(analysis.cuts) + 1
    assert analysis.scenes[-1].end_seconds == generated_media.duration_seconds


def test_keyframe_is_the_sharpest_frame_not_the_first(generated_media: GeneratedMedia) -> None:
    """The blurred-then-sharp scene's keyframe comes from its sharp part, and is crisp."""
    analysis = detect_scenes(generated_media.video)
    scene = analysis.scenes[BLURRED_SCENE]
    assert scene.keyframe_seconds >= scene.start_seconds + BLURRED_SECONDS
    images = dict(
        keyframes(generated_media.video, analysis.scenes, max_width=1280, max_pixels=10**6)
    )
    image = images[BLURRED_SCENE]
    assert image.shape[:2] == (180, 320)  # never scaled up
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert cv2.Laplacian(grey, cv2.CV_32F).var() > 100  # crisp, not from the blurred part
    jpeg = encode_jpeg(image)
    thumb = cv2.imdecode(np.frombuffer(encode_jpeg(image, 160), np.uint8), 1)
    assert thumb is not None
    assert jpeg[:2] == b"\xff\xd8"
    assert thumb.shape[1] == 160


def test_keyframes_come_scaled_down_one_at_a_time(generated_media: GeneratedMedia) -> None:
    """Keyframes arrive one by one (a generator: each is stored before the next is
    decoded), already at the bounded width."""
    analysis = detect_scenes(generated_media.video)
    found = keyframes(generated_media.video, analysis.scenes, max_width=160, max_pixels=10**6)
    index, first = next(found)
    assert (index, first.shape) == (0, (90, 160, 3))
    assert all(image.shape == (90, 160, 3) for _, image in found)


def test_portrait_and_variable_frame_rate(generated_media: GeneratedMedia) -> None:
    assert analysis_size(1080, 1920, 96) == (54, 96)
    vfr = detect_scenes(generated_media.file("vfr.mp4"))
    assert vfr.cuts == []  # one moving pattern, no cut, even as the frame rate changes
    assert vfr.scenes[0].end_seconds > 7.5
