"""How fast and how accurate is the media work: preprocess, scene cuts, speech-to-text.

Run from the repo root: ``python -m bench.media``. On a generated 10-minute 720p talk
(espeak-ng speech, lavfi scenes with known cut times; built once, cached under the
state dir) it measures, each against a baseline timed in the same run:

P. preprocess and scenes (16 kHz audio, silence-aware chunks, scene cuts with
   keyframes, as the two stages do it, side by side) as a multiple of real time, and
   against the floor: a plain FFmpeg decode of the same file (``-f null``);
S. our scene detection against PySceneDetect's ContentDetector and AdaptiveDetector
   (default settings) and against a plain FFmpeg decode of the video stream: wall and
   CPU seconds, and F1 of the cuts (within 0.5 s of the truth);
T. speech-to-text as a transcribe worker does it: the talk's audio cut into chunks as
   preprocess cuts them (VI_CHUNK_SECONDS, or each size given to ``--chunk-seconds``),
   transcribed by the configured transcriber from a worker's handler threads
   (VI_WORKER_THREADS): real-time factor and word error rate, next to faster-whisper's
   default settings (beam 5, the whole audio in one call) and the speed ratio; with the
   pace its CPU seconds would allow on two idle cores, which, unlike the wall time,
   holds up on a machine shared with other work.

C. short clips (about 6 s, cut at silences) as a burst of short jobs reaches a transcribe
   worker: each in a window of the model of its own, then one customer's clips packed
   into shared windows (inference/packing.py): CPU per clip, clips per window, WER.

Targets on a 2-core machine: P >= 70x real time and <= 1.3x the decode floor;
S >= 3x faster than ContentDetector with F1 >= 0.95; T >= 50x real time per 2-core
worker at a WER no worse than the defaults'; C: packed clips at most half the CPU of
clips alone. Each target is printed PASS or MISS; the benchmark always exits 0.
``--only S`` (or P, T, C; repeatable) runs only those parts.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import REGISTRY

from inference.transcriber import Transcriber, transcriber_from_settings
from inference.transcriber_whisper import (
    concurrent_transcriptions,
    default_model_dir,
    worker_cores,
)
from media.audio import SAMPLE_RATE_HZ, copy_span, extract_audio
from media.chunking import plan_chunks
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
from vidinsight.settings import Settings, get_settings

SECONDS = 600.0
SIZE = "1280x720"
FPS = 25
SOURCES = ["testsrc2", "smptehdbars", "mandelbrot", "rgbtestsrc", "testsrc", "yuvtestsrc",
           "colorspectrum", "zoneplate", "pal75bars"]  # fmt: skip
SCENE_SECONDS = [23.0, 31.0, 17.0, 38.0, 26.0, 19.0, 34.0, 29.0, 21.0, 36.0]
TOLERANCE_SECONDS = 0.5
T = TypeVar("T")
PARTS = ("P", "S", "T", "C")
CLIP_SECONDS = 6.0


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


@dataclass(frozen=True)
class Cost:
    """Wall and CPU seconds of one run. CPU counts this process's threads and its reaped
    children (FFmpeg), so it holds up on a machine shared with other work."""

    wall: float
    cpu: float


def cpu_seconds() -> float:
    """CPU seconds so far of this process's threads and its reaped children."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def costed(action: Callable[[], T]) -> tuple[Cost, T]:
    """Wall and CPU seconds of ``action``, and its value."""
    began = cpu_seconds()
    wall, value = timed(action)
    return Cost(wall, cpu_seconds() - began), value


def pyscenedetect_cuts(video: Path, detector: str) -> list[float]:
    """The cuts PySceneDetect's ``detector`` (a class name) finds with its defaults."""
    import scenedetect

    scenes = scenedetect.detect(str(video), getattr(scenedetect, detector)())
    return [start.seconds for start, _ in scenes[1:]]


def scene_part(talk: Talk) -> None:
    """S: our scene cuts against PySceneDetect's detectors and a plain decode of the video
    stream (the least any detection decoding every frame can cost), timed in this run."""
    ours, cuts = costed(lambda: detect_scenes(talk.video).cuts)
    ours_f1 = f1(cuts, talk.cuts)
    print(f"S  scenes, ours: {ours.wall:.1f} s ({ours.cpu:.1f} CPU s), F1 {ours_f1:.3f} "
          f"[{verdict(ours_f1 >= 0.95)} >= 0.95]")  # fmt: skip
    for detector, target in (("ContentDetector", 3.0), ("AdaptiveDetector", None)):
        theirs, their_cuts = costed(partial(pyscenedetect_cuts, talk.video, detector))
        speedup = theirs.wall / ours.wall
        wanted = "" if target is None else f" [{verdict(speedup >= target)} >= {target:.0f}x]"
        print(f"S  {detector}: {theirs.wall:.1f} s ({theirs.cpu:.1f} CPU s), F1 "
              f"{f1(their_cuts, talk.cuts):.3f}; ours {speedup:.2f}x faster{wanted}, "
              f"{theirs.cpu / ours.cpu:.2f}x less CPU")  # fmt: skip
    decode, _ = costed(
        lambda: run_ffmpeg(["-i", str(talk.video), "-map", "0:v:0", "-f", "null", "-"])
    )
    print(f"S  plain FFmpeg decode of the video (-f null): {decode.wall:.1f} s "
          f"({decode.cpu:.1f} CPU s); ours takes {ours.wall / decode.wall:.2f}x its time, "
          f"{ours.cpu / decode.cpu:.2f}x its CPU")  # fmt: skip


def default_whisper(wav: Path) -> tuple[Cost, str]:
    """Cost and text of faster-whisper with every setting at its default, the model loaded
    before the clock starts (a worker loads it once, for its first chunk)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(default_model_dir()), device="cpu")
    return costed(lambda: " ".join(s.text for s in model.transcribe(str(wav))[0]))


def cut_chunks(wav: Path, folder: Path, seconds: float) -> list[Path]:
    """``wav`` cut as preprocess cuts it: chunks of about ``seconds``, each in a silence."""
    folder.mkdir(parents=True, exist_ok=True)
    search = get_settings().chunk_search_seconds
    spans = plan_chunks(wav, target_seconds=seconds, search_seconds=search)
    return [copy_span(wav, s.start_sample, s.end_sample, folder / f"{s.index}.wav") for s in spans]


def transcribe_as_worker(
    transcriber: Transcriber, chunks: list[Path], threads: int, tenant: str | None = None
) -> str:
    """The chunks' text in order, transcribed from ``threads`` threads at once, as a
    transcribe worker's handler threads take one chunk each (all of ``tenant``)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        transcripts = pool.map(
            lambda chunk: transcriber.transcribe(chunk, "en", tenant=tenant), chunks
        )
        return " ".join(transcript.text for transcript in transcripts)


def warm_transcriber(talk: Talk, folder: Path, settings: Settings) -> tuple[Path, Transcriber]:
    """The talk's audio, and the configured transcriber with its model loaded and warm: a
    worker loads (and warms up) the model on its first chunk, not on every one."""
    wav = extract_audio(talk.video, folder / "stt.wav")
    transcriber = transcriber_from_settings(settings)
    transcriber.transcribe(copy_span(wav, 0, 10 * SAMPLE_RATE_HZ, folder / "warm.wav"), "en")
    return wav, transcriber


def speech_part(talk: Talk, folder: Path, chunk_seconds: list[float]) -> None:
    """T: the configured transcriber on the talk cut into chunks of each size, as a worker
    takes them, and faster-whisper's defaults on the whole audio, timed in this run."""
    settings = get_settings()
    wav, transcriber = warm_transcriber(talk, folder, settings)
    base, base_text = default_whisper(wav)
    base_rtf, base_wer = SECONDS / base.wall, wer(talk.text, base_text)
    cores = worker_cores()
    print(f"T  faster-whisper defaults (beam 5, whole audio in one call): {base.wall:.1f} s "
          f"({base.cpu:.1f} CPU s) = {base_rtf:.1f}x real time, WER {base_wer:.2%}")  # fmt: skip
    print(f"T  configured: {transcriber.model_name}, beam {settings.whisper_beam_size}, batch "
          f"{settings.whisper_batch_size}, {settings.whisper_cpu_threads} thread(s) x "
          f"{concurrent_transcriptions(settings)} transcription(s) at once, "
          f"{settings.worker_threads} handler threads, {cores} cores")  # fmt: skip
    for seconds in chunk_seconds:
        chunks = cut_chunks(wav, folder / f"chunks{seconds:g}", seconds)
        worker = partial(transcribe_as_worker, transcriber, chunks, settings.worker_threads)
        cost, text = costed(worker)
        rtf, ours_wer = SECONDS / cost.wall, wer(talk.text, text)
        per_worker = rtf * 2 / cores
        ok = per_worker >= 50 and ours_wer <= base_wer
        print(f"T  {seconds:g} s chunks ({len(chunks)}): {cost.wall:.1f} s ({cost.cpu:.1f} CPU s)"
              f" = {rtf:.1f}x real time, {per_worker:.1f}x per 2-core worker (its CPU time on 2"
              f" idle cores: {2 * SECONDS / cost.cpu:.1f}x), WER {ours_wer:.2%}; "
              f"{rtf / base_rtf:.1f}x the defaults' speed, WER "
              f"{ours_wer - base_wer:+.2%} [{verdict(ok)} >= 50x per 2-core worker at WER <= "
              f"{base_wer:.2%}]")  # fmt: skip


def pack_counts() -> tuple[float, float, float]:
    """Windows the model has been given so far, the clips they held, and the clips decoded
    again alone because their window ended early."""
    names = ("pack_clips_count", "pack_clips_sum", "pack_redone_total")
    return tuple(  # type: ignore[return-value]
        REGISTRY.get_sample_value(f"vidinsight_transcribe_{name}") or 0.0 for name in names
    )


def clips_part(talk: Talk, folder: Path) -> None:
    """C: the talk as short clips, cut at silences, from a worker's handler threads (four
    per transcription at once, so clips queue for the model as in a burst): each clip
    in a window of its own, then one customer's clips packed into shared windows."""
    settings = get_settings().model_copy(update={"whisper_pack": True})
    wav, transcriber = warm_transcriber(talk, folder, settings)
    clips = cut_chunks(wav, folder / f"clips{CLIP_SECONDS:g}", CLIP_SECONDS)
    threads = 4 * concurrent_transcriptions(settings)
    print(f"C  {len(clips)} clips of about {CLIP_SECONDS:g} s from {threads} handler threads")
    runs: list[tuple[str, Cost]] = []
    for label, tenant in (("alone", None), ("packed", "one-customer")):
        before = pack_counts()
        worker = partial(transcribe_as_worker, transcriber, clips, threads, tenant)
        cost, text = costed(worker)
        windows, held, redone = (a - b for a, b in zip(pack_counts(), before, strict=True))
        runs.append((label, cost))
        print(f"C  {label}: {cost.wall:.1f} s, {cost.cpu / len(clips):.3f} CPU s per clip, "
              f"{held / windows:.2f} clips per window, {redone:.0f} decoded again alone, "
              f"WER {wer(talk.text, text):.2%}")  # fmt: skip
    (_, alone), (_, packed) = runs
    ratio = packed.cpu / alone.cpu
    print(f"C  packed clips take {ratio:.2f}x the CPU of clips alone "
          f"[{verdict(ratio <= 0.5)} <= 0.5]")  # fmt: skip


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-stt", action="store_true", help="leave out speech-to-text")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part")
    parser.add_argument("--chunk-seconds", type=float, nargs="+", help="T: chunk sizes to try")
    args = parser.parse_args()
    parts = set(args.only or PARTS) - ({"T"} if args.skip_stt else set())
    settings = get_settings()
    talk = build_talk(settings.state_dir / "bench-media" / "talk720-v1")
    print(f"video: {talk.video} ({SECONDS:.0f} s, {SIZE}, {FPS} fps, {len(talk.cuts)} cuts)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "P" in parts:
            floor, _ = timed(lambda: run_ffmpeg(["-i", str(talk.video), "-f", "null", "-"]))
            ours, _ = timed(lambda: preprocess(talk.video, folder, SECONDS))
            print(f"P  preprocess {ours:.1f} s = {SECONDS / ours:.0f}x real time "
                  f"[{verdict(SECONDS / ours >= 70)} >= 70x]; decode floor {floor:.1f} s, "
                  f"ratio {ours / floor:.2f} [{verdict(ours / floor <= 1.3)} <= 1.3]")  # fmt: skip
        if "S" in parts:
            scene_part(talk)
        if "T" in parts:
            speech_part(talk, folder, args.chunk_seconds or [settings.chunk_seconds])
        if "C" in parts:
            clips_part(talk, folder)


if __name__ == "__main__":
    main()
