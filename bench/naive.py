"""The baseline the platform is measured against: the naive sequential script.

One process, each video in turn: FFmpeg audio extraction, PySceneDetect's
ContentDetector, then faster-whisper on the platform's model. It runs as a child
process (``python -m bench.pipeline --naive-only VIDEO...``) so that its CPU time is
that child's rusage alone.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.media import pyscenedetect_cuts, timed
from vidinsight.settings import REPO_ROOT


@dataclass(frozen=True)
class Measured:
    """Wall and CPU seconds of one way of processing the media."""

    wall_seconds: float
    cpu_seconds: float


def whisper_text(model: Any, wav: Path) -> str:
    return " ".join(segment.text for segment in model.transcribe(str(wav))[0])


def naive_script(videos: Sequence[Path], folder: Path) -> dict[str, Any]:
    """The script the platform replaces: for each video three steps, one after the other,
    in one process, which loads the model once."""
    from faster_whisper import WhisperModel

    from inference.transcriber_whisper import default_model_dir
    from media.tools import run_ffmpeg

    steps = dict.fromkeys(["model load", "ffmpeg audio", "ContentDetector", "faster-whisper"], 0.0)
    steps["model load"], model = timed(
        partial(WhisperModel, str(default_model_dir()), device="cpu")
    )
    results: list[dict[str, Any]] = []
    wav = folder / "audio.wav"
    for video in videos:
        extract = ["-i", str(video), "-vn", "-ac", "1", "-ar", "16000", str(wav)]
        steps["ffmpeg audio"] += timed(partial(run_ffmpeg, extract))[0]
        seconds, cuts = timed(partial(pyscenedetect_cuts, video, "ContentDetector"))
        steps["ContentDetector"] += seconds
        seconds, text = timed(partial(whisper_text, model, wav))
        steps["faster-whisper"] += seconds
        results.append({"cuts": cuts, "words": len(text.split())})
    return {"steps": steps, "videos": results}


def print_naive_script(videos: Sequence[Path]) -> None:
    """The child process of ``run_naive``: the script's result as one JSON line."""
    with tempfile.TemporaryDirectory(prefix="bench-naive-") as folder:
        print(json.dumps(naive_script(videos, Path(folder))))


@dataclass(frozen=True)
class NaiveRun:
    measured: Measured
    steps: dict[str, float]
    videos: list[dict[str, Any]]


def run_naive(videos: Sequence[Path]) -> NaiveRun:
    """The naive script in a child process: its wall time, and CPU time from its rusage."""
    command = [sys.executable, "-m", "bench.pipeline", "--naive-only", *map(str, videos)]
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the naive script failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    return NaiveRun(Measured(wall, cpu), result["steps"], result["videos"])
