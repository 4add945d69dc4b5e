"""Scene cuts on the generated talk: found within 0.5 s, sharpest frame as keyframe;
a video cut into segments gives, segment by segment, the whole file's cuts and scenes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from media.keyframes import encode_jpeg, keyframes
from media.scenes import (
    CONTEXT_SECONDS,
    WIDEN,
    SceneAnalysis,
    analysis_size,
    detect_scenes,
    grey_frames,
)
from media.tools import run_ffmpeg
from sinks.scenes import join_pieces
from tests.fixtures.media import BLURRED_SCENE, BLURRED_SECONDS, FPS, GeneratedMedia
from tests.media.test_limits import reached_seconds
from vidinsight.errors import PermanentError, Reason

TOLERANCE_SECONDS = 0.5
SIZE = (96, 54)  # the analysis size of the 320x180 talk


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


@dataclass(frozen=True)
class Whole:
    """A whole-file pass over a video: its analysis and the times of the frames decoded."""

    video: Path
    analysis: SceneAnalysis
    times: list[float]

    def frames_within(self, start: float, end: float) -> int:
        """How many frames lie in [start, end] (a seeking pass takes the one at its limit)."""
        return sum(start <= t <= end for t in self.times)


def whole_pass(video: Path) -> Whole:
    times: list[float] = []
    for _ in grey_frames(video, SIZE, times):
        pass
    return Whole(video, detect_scenes(video), times)


@pytest.fixture(scope="module")
def whole_talk(generated_media: GeneratedMedia) -> Whole:
    return whole_pass(generated_media.video)


def assert_segments_give_the_whole(whole: Whole, borders: list[float]) -> list[SceneAnalysis]:
    """Segments cut at ``borders``: their cuts together are the whole file's, each piece
    lies in its segment and opens with a cut unless at a border, and the pieces joined
    are the whole file's scenes (times, keyframe and its sharpness)."""
    segments = list(zip([0.0, *borders], [*borders, None], strict=True))
    analyses = [detect_scenes(whole.video, start_seconds=s, end_seconds=e) for s, e in segments]
    assert [cut for analysis in analyses for cut in analysis.cuts] == whole.analysis.cuts
    starts = {0.0, *whole.analysis.cuts}
    for (start, end), analysis in zip(segments, analyses, strict=True):
        for piece in analysis.scenes:
            assert start <= piece.start_seconds < piece.end_seconds
            assert end is None or piece.end_seconds <= end
            assert start <= piece.keyframe_seconds < piece.end_seconds
            assert piece.opens_with_cut == (piece.start_seconds in starts), (borders, piece)
    joined = join_pieces([asdict(piece) for analysis in analyses for piece in analysis.scenes])
    assert joined == [asdict(scene) for scene in whole.analysis.scenes], borders
    return analyses


def borders_at(place: str, whole: Whole) -> list[float]:
    """Borders on planted cuts, on the decoded frame just before or after one, or
    between two decoded frames (before a cut, after one, and mid-scene)."""
    times = whole.times
    if place == "on cuts":
        return [17.0, 59.0, 121.0, 185.0]
    if place == "between frames":
        return [40.0 - 0.5 / FPS, 106.0 + 0.5 / FPS, 150.5]
    step = -1 if place == "a frame before cuts" else 1
    return [times[times.index(cut) + step] for cut in (40.0, 106.0, 163.0)]


def test_whole_file_scenes_join_to_themselves(whole_talk: Whole) -> None:
    whole = [asdict(scene) for scene in whole_talk.analysis.scenes]
    assert join_pieces(whole) == whole
    assert all(scene.opens_with_cut for scene in whole_talk.analysis.scenes)


@pytest.mark.parametrize(
    "place", ["on cuts", "a frame before cuts", "a frame after cuts", "between frames"]
)
def test_segments_find_the_whole_files_cuts_and_scenes(whole_talk: Whole, place: str) -> None:
    assert_segments_give_the_whole(whole_talk, borders_at(place, whole_talk))


def test_a_segment_sees_the_whole_files_frames_at_the_same_times(whole_talk: Whole) -> None:
    """Seeking keeps the frames' times on the video's timeline, to the digit, and
    decodes the very same pictures."""
    start, end = 95.5, 110.0
    inside = [i for i, t in enumerate(whole_talk.times) if start <= t <= end]
    pictures = [
        grey.copy()
        for i, grey in enumerate(grey_frames(whole_talk.video, SIZE, []))
        if start <= whole_talk.times[i] <= end
    ]
    times: list[float] = []
    seen = [
        grey.copy()
        for grey in grey_frames(
            whole_talk.video, SIZE, times, seek_seconds=start, limit_seconds=end
        )
    ]
    assert times == [whole_talk.times[i] for i in inside]
    assert len(seen) == len(pictures) and all(map(np.array_equal, seen, pictures))


def test_a_segment_decodes_only_its_window(whole_talk: Whole) -> None:
    """The segment and CONTEXT_SECONDS either side, about a seventh of the talk."""
    segment = detect_scenes(whole_talk.video, start_seconds=100.0, end_seconds=110.0)
    window = whole_talk.frames_within(100.0 - CONTEXT_SECONDS, 110.0 + CONTEXT_SECONDS)
    assert segment.frames == window
    assert segment.frames < whole_talk.analysis.frames / 5
    assert segment.cuts == [106.0]
    assert [(p.start_seconds, p.end_seconds) for p in segment.scenes] == [
        (100.0, 106.0),
        (106.0, 110.0),
    ]
    found = keyframes(whole_talk.video, segment.scenes, max_width=160, max_pixels=10**6)
    assert [index for index, _ in found] == [0, 1]


def test_too_long_is_measured_on_the_videos_timeline(whole_talk: Whole) -> None:
    """A segment whose frames (from 140 s with the context) pass the maximum is too_long
    at once; one whose window stays under it is not."""
    with pytest.raises(PermanentError) as caught:
        detect_scenes(whole_talk.video, start_seconds=150.0, end_seconds=160.0, max_seconds=100)
    assert caught.value.reason is Reason.TOO_LONG
    assert 140.0 <= reached_seconds(caught.value) < 141.0
    early = detect_scenes(whole_talk.video, start_seconds=50.0, end_seconds=60.0, max_seconds=100)
    assert early.cuts == [59.0]


@pytest.fixture(scope="module")
def hard_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small videos a window of CONTEXT_SECONDS cannot decide alone:

    - ``strobe``: a white frame every half second on black, 40 s: every flash is a
      candidate, each less than min_scene_seconds after the one before, so which are
      cuts depends on the flashes all the way back to the start;
    - ``sparse``: one frame every 2 s, negated every 10 s, 120 s: the LOCAL_WINDOW_FRAMES
      frames after a cut span 16 s.
    """
    folder = tmp_path_factory.mktemp("hard-scenes")
    sources = {
        "strobe": "color=c=black:size=96x54:rate=10:duration=40,drawbox=w=96:h=54"
        ":color=white:t=fill:enable='eq(mod(n\\,5)\\,0)'",
        "sparse": "testsrc2=size=96x54:rate=1/2:duration=120,negate=enable='lt(mod(t\\,20)\\,10)'",
    }
    for name, source in sources.items():
        run_ffmpeg(["-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "ultrafast",
                    str(folder / f"{name}.mp4")])  # fmt: skip
    return {name: folder / f"{name}.mp4" for name in sources}


def test_a_strobe_widens_the_window_back_to_the_start(hard_media: dict[str, Path]) -> None:
    whole = whole_pass(hard_media["strobe"])
    assert len(whole.analysis.cuts) > 30
    (_, last) = assert_segments_give_the_whole(whole, [20.05])
    assert last.frames == whole.analysis.frames


def test_sparse_frames_widen_the_window_after_the_segment(hard_media: dict[str, Path]) -> None:
    whole = whole_pass(hard_media["sparse"])
    assert len(whole.analysis.cuts) >= 10
    (_, middle, _) = assert_segments_give_the_whole(whole, [30.0, 41.0])
    # Under LOCAL_WINDOW_FRAMES + 1 frames in the context either side: both sides widened
    # once, the start back to the file's start.
    assert middle.frames == whole.frames_within(0.0, 41.0 + CONTEXT_SECONDS * WIDEN)
