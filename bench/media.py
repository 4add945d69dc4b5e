"""How fast and how accurate is the media work: preprocess, scene cuts, speech-to-text.

Run from the repo root: ``python -m bench.media``. On a generated 10-minute 720p talk
(espeak-ng speech, lavfi scenes with known cut times; built once, cached under the
state dir) it measures, each against a baseline timed in the same run:

P. preprocess and scenes (16 kHz audio, silence-aware chunks, scene cuts with
   keyframes, as the two stages do it, side by side) as a multiple of real time, and
   against the floor: a plain FFmpeg decode of the same file (``-f null``);
S. our scene detection against PySceneDetect's ContentDetector: time, and F1 of the
   cuts (within 0.5 s of the truth) for both;
T. speech-to-text real-time factor and word error rate of the configured transcriber,
   next to faster-whisper's default settings (beam 5) on the same audio.

Targets on a 2-core machine: P >= 70x real time and <= 1.3x the decode floor;
S >= 2x faster than ContentDetector with F1 >= 0.95; T >= 40x real time at WER <= 10%.
Each target is printed PASS or MISS; the benchmark always exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from inference.transcriber import transcriber_from_settings
from inference.transcriber_whisper import default_model_dir
from media.audio import extract_audio
from media.scenes import detect_scenes
from media.segments import Segment
from media.tools import run_ffmpeg
from sinks.blobs import BlobStore
from streams.media_work import MediaWork
from streams.preprocess import StoredChunk, cut_audio
from streams.scenes import find_scenes
from tests.fixtures.media import ESPEAK_RATE_HZ, build_speech
from tests.fixtures.media import write_wav as write_speech
from tests.inference.test_transcriber import wer
from vidinsight.settings import get_settings

SECONDS = 600.0
SIZE = "1280x720"
FPS = 25
SOURCES = ["testsrc2", "smptehdbars", "mandelbrot", "rgbtestsrc", "testsrc", "yuvtestsrc",
           "colorspectrum", "zoneplate", "pal75bars"]  # fmt: skip
SCENE_SECONDS = [23.0, 31.0, 17.0, 38.0, 26.0, 19.0, 34.0, 29.0, 21.0, 36.0]
TOLERANCE_SECONDS = 0.5
T = TypeVar("T")


@dataclass(frozen=True)
class Talk:
    video: Path
    text: str
    cuts: list[float]


def scene_plan() -> list[tuple[str, float]]:
    """Sources and lengths filling SECONDS; adjacent scenes always use different sources."""
    plan: list[tuple[str, float]] = []
    total = 0.0
    while total < SECONDS:
        seconds = min(SCENE_SECONDS[len(plan) % len(SCENE_SECONDS)], SECONDS - total)
        plan.append((SOURCES[len(plan) % len(SOURCES)], seconds))
        total += seconds
    return plan


def build_talk(folder: Path) -> Talk:
    """The 10-minute 720p talk, built once into ``folder``."""
    plan = scene_plan()
    cuts = [sum(s for _, s in plan[:i]) for i in range(1, len(plan))]
    truth = folder / "truth.json"
    if not truth.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        samples, speech = build_speech(folder, SECONDS - 3)
        write_speech(folder / "speech.wav", samples, ESPEAK_RATE_HZ)
        inputs: list[str] = []
        for source, seconds in plan:
            inputs += ["-t", str(seconds), "-f", "lavfi", "-i", f"{source}=size={SIZE}:rate={FPS}"]
        graph = "".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}];" for i in range(len(plan)))
        graph += "".join(f"[v{i}]" for i in range(len(plan))) + f"concat=n={len(plan)}:v=1:a=0[v]"
        run_ffmpeg(
            [*inputs, "-i", str(folder / "speech.wav"), "-filter_complex", graph,
             "-map", "[v]", "-map", f"{len(plan)}:a", "-af", f"apad=whole_dur={SECONDS}",
             "-t", str(SECONDS), "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
             "-g", str(FPS * 2), "-c:a", "aac", "-b:a", "64k", str(folder / "talk720.mp4")]
        )  # fmt: skip
        truth.write_text(json.dumps({"text": speech.text}))
    return Talk(folder / "talk720.mp4", json.loads(truth.read_text())["text"], cuts)


def f1(found: list[float], truth: list[float]) -> float:
    """F1 of found cuts, each true cut matched at most once within the tolerance."""
    unmatched, hits = list(truth), 0
    for cut in found:
        near = [t for t in unmatched if abs(t - cut) <= TOLERANCE_SECONDS]
        if near:
            unmatched.remove(near[0])
            hits += 1
    precision, recall = hits / max(1, len(found)), hits / max(1, len(truth))
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """Wall time of ``action`` and its value."""
    began = time.perf_counter()
    value = action()
    return time.perf_counter() - began, value


@dataclass(frozen=True)
class Prepared:
    """What both branches after ingest stored for one video: the chunks and the scenes."""

    chunks: list[StoredChunk]
    scene_rows: list[dict[str, Any]]


def preprocess(video: Path, folder: Path, seconds: float) -> Prepared:
    """What the preprocess (audio) and scenes stages do (their own functions) minus Kafka,
    side by side as their workers would: chunks, scenes and keyframes of ``video``
    (``seconds`` long, one segment), stored to a blob store in ``folder``."""
    work = MediaWork(
        settings=get_settings(),
        blobs=BlobStore(folder.resolve().as_uri()),
        job_id="bench",
        media=video,
        ingested_seconds=seconds,
        segment=Segment(index=0, count=1, start_seconds=0.0, end_seconds=None),
        deadline=None,
    )
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        chunks = pool.submit(cut_audio, work, Path(tmp))
        scenes = pool.submit(find_scenes, work)
        return Prepared(chunks.result(), scenes.result()[0])


def pyscenedetect_cuts(video: Path) -> list[float]:
    from scenedetect import ContentDetector, detect

    scenes = detect(str(video), ContentDetector())
    return [start.seconds for start, _ in scenes[1:]]


def default_whisper_text(wav: Path) -> str:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(default_model_dir()), device="cpu")
    segments, _ = model.transcribe(str(wav))
    return " ".join(s.text for s in segments)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-stt", action="store_true", help="leave out speech-to-text")
    args = parser.parse_args()
    settings = get_settings()
    talk = build_talk(settings.state_dir / "bench-media" / "talk720-v1")
    print(f"video: {talk.video} ({SECONDS:.0f} s, {SIZE}, {FPS} fps, {len(talk.cuts)} cuts)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floor, _ = timed(lambda: run_ffmpeg(["-i", str(talk.video), "-f", "null", "-"]))
        ours, _ = timed(lambda: preprocess(talk.video, folder, SECONDS))
        print(f"P  preprocess {ours:.1f} s = {SECONDS / ours:.0f}x real time "
              f"[{verdict(SECONDS / ours >= 70)} >= 70x]; decode floor {floor:.1f} s, "
              f"ratio {ours / floor:.2f} [{verdict(ours / floor <= 1.3)} <= 1.3]")  # fmt: skip
        scene_time, analysis = timed(lambda: detect_scenes(talk.video))
        theirs, their_cuts = timed(lambda: pyscenedetect_cuts(talk.video))
        ours_f1, their_f1 = f1(analysis.cuts, talk.cuts), f1(their_cuts, talk.cuts)
        speedup = theirs / scene_time
        print(f"S  scenes: ours {scene_time:.1f} s F1 {ours_f1:.3f} [{verdict(ours_f1 >= 0.95)}"
              f" >= 0.95]; ContentDetector {theirs:.1f} s F1 {their_f1:.3f}; speed-up "
              f"{speedup:.1f}x [{verdict(speedup >= 2)} >= 2x]")  # fmt: skip
        if args.skip_stt:
            return
        wav = extract_audio(talk.video, folder / "stt.wav")
        stt_time, transcript = timed(
            lambda: transcriber_from_settings(settings).transcribe(wav, "en")
        )
        base_time, base_text = timed(lambda: default_whisper_text(wav))
        ours_wer, base_wer = wer(talk.text, transcript.text), wer(talk.text, base_text)
        print(f"T  speech-to-text ({transcript.model}, beam {settings.whisper_beam_size}, batch "
              f"{settings.whisper_batch_size}): "
              f"{SECONDS / stt_time:.0f}x real time [{verdict(SECONDS / stt_time >= 40)} >= 40x],"
              f" WER {ours_wer:.1%} [{verdict(ours_wer <= 0.10)} <= 10%]; faster-whisper "
              f"defaults {SECONDS / base_time:.0f}x real time, WER {base_wer:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
