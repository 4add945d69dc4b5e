"""The soak batch: talks of mixed lengths from several customers, made once and cached.

Each talk is the tests' espeak-ng script read on for the talk's length over small
pictures that change every ``SCENE_SECONDS`` (a scene cut each time), so every stage
has real work: speech to transcribe, cuts to find, keyframes to take. Small pictures
keep a ten-minute talk to a few megabytes and seconds of FFmpeg time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from media.tools import ffmpeg_exe, run_ffmpeg
from tests.fixtures.media import (
    ESPEAK_RATE_HZ,
    PAUSES,
    SENTENCES,
    build_speech,
    built_in_place,
    write_wav,
)

SCENE_SECONDS = 20
# Two lavfi sources that look nothing alike, alternated: each change is a scene cut.
SOURCES = ("testsrc2=size=160x90:rate=5", "smptehdbars=size=160x90:rate=5")
RECIPE_VERSION = "1"


@dataclass(frozen=True)
class Item:
    """One job of the batch: a name that is the same in every run, its customer and video."""

    name: str
    customer: str
    video: Path
    seconds: int


def recipe_hash() -> str:
    recipe = [RECIPE_VERSION, SCENE_SECONDS, SOURCES, SENTENCES, PAUSES, ffmpeg_exe()]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def talk(folder: Path, seconds: int) -> Path:
    """A talk of ``seconds`` in ``folder`` (built once; later calls reuse the file)."""
    target = folder / f"talk-{recipe_hash()}-{seconds}s.mp4"
    if target.exists():
        return target
    with built_in_place(target, folder=False) as partial:
        work = partial.with_suffix(".d")
        work.mkdir()
        samples, _ = build_speech(work, max(seconds - 1.0, 1.0))
        write_wav(work / "speech.wav", samples, ESPEAK_RATE_HZ)
        inputs: list[str] = []
        scenes = max(1, -(-seconds // SCENE_SECONDS))
        for index in range(scenes):
            inputs += ["-t", str(SCENE_SECONDS), "-f", "lavfi", "-i", SOURCES[index % 2]]
        chain = "".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}];" for i in range(scenes))
        chain += "".join(f"[v{i}]" for i in range(scenes)) + f"concat=n={scenes}:v=1:a=0[v]"
        run_ffmpeg(
            [
                *inputs, "-i", str(work / "speech.wav"),
                "-filter_complex", chain, "-map", "[v]", "-map", f"{scenes}:a",
                "-af", f"apad=whole_dur={seconds}", "-t", str(seconds),
                "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
                "-c:a", "aac", "-b:a", "48k", str(partial),
            ]
        )  # fmt: skip
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    return target


def make_batch(folder: Path, lengths: list[int], customers: list[str]) -> list[Item]:
    """One item per length, the customers taking turns, named by position and length."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        Item(f"talk-{index:02d}-{seconds}s", customers[index % len(customers)],
             talk(folder, seconds), seconds)
        for index, seconds in enumerate(lengths)
    ]  # fmt: skip
