"""A long generated 720p talk with known scene cuts: one short cycle, encoded once, looped.

Encoding an hour of 720p takes minutes on two cores, and espeak-ng would take longer
still to speak an hour. Neither is needed: a cycle of at most ``CYCLE_SECONDS`` is
generated (espeak-ng sentences over lavfi scenes, x264 at the same settings as
``bench.media``, so the file decodes like an ordinary recording), and the long video
is that cycle repeated by ``ffmpeg -stream_loop`` with stream copy, which costs
seconds. The speech stays real words (whisper transcribes it), and every cut is known:
the cycle's own cuts, plus one at each repeat, because its last scene differs from
its first. The files are cached under the state dir, keyed by a hash of the recipe.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import av

from media.tools import ffmpeg_exe, run_ffmpeg
from tests.fixtures.media import (
    ESPEAK_RATE_HZ,
    SENTENCES,
    build_speech,
    built_in_place,
    write_wav,
)

RECIPE_VERSION = "2"
SIZE = "1280x720"
FPS = 25
CYCLE_SECONDS = 300.0
# The speech stops this long before the cycle ends, so no sentence is cut by a repeat.
SPEECH_MARGIN_SECONDS = 7.0
# One lavfi source per scene (20-60 s each), with its length; moving and still pictures
# mixed to about 1.3 Mbit/s, adjacent scenes (and the last and the first) always differ.
SCENES: list[tuple[str, float]] = [
    ("testsrc2", 34.0),
    ("smptehdbars", 22.0),
    ("cellauto=rule=110", 47.0),
    ("zoneplate=kt2=1:ky2=2", 28.0),
    ("sierpinski", 41.0),
    ("gradients=speed=0.05", 25.0),
    ("mandelbrot", 30.0),
    ("rgbtestsrc", 20.0),
    ("testsrc", 27.0),
    ("colorspectrum", 26.0),
]


@dataclass(frozen=True)
class LoopedTalk:
    """The generated video, the truth it was built from, and what building it cost."""

    video: Path
    seconds: float
    cuts: list[float]
    cycle_text: str
    generation_seconds: float
    cached: bool


def cycle_plan(cycle_seconds: float) -> list[tuple[str, float]]:
    """The scenes of one cycle, the last one shortened so the cycle lasts ``cycle_seconds``."""
    plan: list[tuple[str, float]] = []
    total = 0.0
    for source, seconds in SCENES:
        if total >= cycle_seconds:
            break
        plan.append((source, min(seconds, cycle_seconds - total)))
        total += plan[-1][1]
    return plan


def cut_times(seconds: float, cycle_seconds: float, period_seconds: float) -> list[float]:
    """Every cut of the looped video: each cycle's inner cuts, plus one where it repeats.

    A repeat starts ``period_seconds`` after the previous one: the cycle file's own
    duration, a little longer than ``cycle_seconds`` (AAC's priming samples), which
    would otherwise shift the cuts of the twelfth cycle by half a second.
    """
    plan = cycle_plan(cycle_seconds)
    inner = [sum(s for _, s in plan[:i]) for i in range(1, len(plan))]
    cuts: list[float] = []
    start = 0.0
    while start < seconds:
        if start > 0:
            cuts.append(start)
        cuts += [start + cut for cut in inner if start + cut < seconds]
        start += period_seconds
    return cuts


def recipe_hash(seconds: float, cycle_seconds: float) -> str:
    """What the files depend on; a changed recipe gets a folder of its own."""
    recipe = [RECIPE_VERSION, seconds, cycle_seconds, SCENES, SIZE, FPS, SENTENCES, ffmpeg_exe()]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def encode_cycle(folder: Path, plan: list[tuple[str, float]], cycle_seconds: float) -> str:
    """Speech over the scenes of one cycle, as ``cycle.mp4``; returns the words spoken."""
    samples, speech = build_speech(folder, cycle_seconds - SPEECH_MARGIN_SECONDS)
    write_wav(folder / "speech.wav", samples, ESPEAK_RATE_HZ)
    inputs: list[str] = []
    for source, seconds in plan:
        name, _, options = source.partition("=")
        graph = f"{name}=size={SIZE}:rate={FPS}" + (f":{options}" if options else "")
        inputs += ["-t", str(seconds), "-f", "lavfi", "-i", graph]
    chain = "".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}];" for i in range(len(plan)))
    chain += "".join(f"[v{i}]" for i in range(len(plan))) + f"concat=n={len(plan)}:v=1:a=0[v]"
    run_ffmpeg(
        [*inputs, "-i", str(folder / "speech.wav"), "-filter_complex", chain,
         "-map", "[v]", "-map", f"{len(plan)}:a", "-af", f"apad=whole_dur={cycle_seconds}",
         "-t", str(cycle_seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
         "-g", str(FPS * 2), "-c:a", "aac", "-b:a", "64k", str(folder / "cycle.mp4")]
    )  # fmt: skip
    (folder / "speech.wav").unlink()
    return speech.text


def loop_cycle(folder: Path, seconds: float) -> float:
    """The cycle repeated to ``seconds`` by stream copy (no decoding, no encoding); the
    period of a repeat, which is the cycle file's duration."""
    with av.open(str(folder / "cycle.mp4")) as cycle:
        period = float(cycle.duration or 0) / av.time_base
    run_ffmpeg(
        ["-stream_loop", "-1", "-i", str(folder / "cycle.mp4"), "-t", str(seconds),
         "-c", "copy", "-movflags", "+faststart", str(folder / "talk.mp4")]
    )  # fmt: skip
    return period


def build_looped_talk(root: Path, minutes: float) -> LoopedTalk:
    """The ``minutes``-long talk under ``root``, built once and reused while its recipe holds."""
    seconds = round(minutes * 60, 3)
    cycle_seconds = min(CYCLE_SECONDS, seconds)
    folder = root / f"talk-{recipe_hash(seconds, cycle_seconds)}"
    truth_file = folder / "truth.json"
    cached = truth_file.exists()
    if not cached:
        shutil.rmtree(folder, ignore_errors=True)  # incomplete
        with built_in_place(folder, folder=True) as partial:
            began = time.perf_counter()
            text = encode_cycle(partial, cycle_plan(cycle_seconds), cycle_seconds)
            period = loop_cycle(partial, seconds)
            (partial / "cycle.mp4").unlink()
            truth = {
                "text": text,
                "period_seconds": period,
                "generation_seconds": round(time.perf_counter() - began, 1),
            }
            (partial / "truth.json").write_text(json.dumps(truth))
    truth = json.loads(truth_file.read_text())
    return LoopedTalk(
        video=folder / "talk.mp4",
        seconds=seconds,
        cuts=cut_times(seconds, cycle_seconds, float(truth["period_seconds"])),
        cycle_text=str(truth["text"]),
        generation_seconds=float(truth["generation_seconds"]),
        cached=cached,
    )


def clip_starts(count: int, seconds: float, source_seconds: float) -> list[float]:
    """Where each clip begins: one after the other through the source, then round again."""
    distinct = max(1, int((source_seconds - seconds) // seconds) + 1)
    return [(index % distinct) * seconds for index in range(count)]


def build_clips(root: Path, count: int, seconds: float) -> list[Path]:
    """``count`` clips of ``seconds`` cut from the cycle-long talk (speech over scenes),
    each from its own stretch while there are stretches left, so the jobs are not copies
    of one file. Re-encoded at the talk's settings, so each opens on a keyframe; built
    once, cached beside the talk and shared by batches of any size."""
    talk = build_looped_talk(root, CYCLE_SECONDS / 60)
    folder = talk.video.parent / f"clips-{seconds:g}s"
    clips: list[Path] = []
    for start in clip_starts(count, seconds, talk.seconds):
        clip = folder / f"clip-{start:g}.mp4"
        if not clip.exists():
            with built_in_place(clip, folder=False) as partial:
                run_ffmpeg(
                    ["-ss", str(start), "-i", str(talk.video), "-t", str(seconds),
                     "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-g", str(FPS * 2),
                     "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(partial)]
                )  # fmt: skip
        clips.append(clip)
    return clips
