"""Does preprocessing a long video stay within a fixed memory ceiling?

Run from the repo root: ``python -m bench.media_memory``. It generates, once (cached
under the state dir), a six-hour file and a ten-minute file of the same kind
(``tests.fixtures.media.tiny_media``): 160x90 video at 2 fps with a scene cut every
30 s (720 scenes, so 720 keyframes, in six hours) and an 8 kHz mono AAC tone with a
silence every 7 s. Each is preprocessed, as one segment, by the two stages' own work
(``bench.media.preprocess``: the audio branch's extraction, levels and chunks beside
the scene branch's detection and keyframes, stored to a blob store in a temporary
directory) in a fresh child process, which
reports its own peak RSS (the worker's share) and its largest FFmpeg child's.

Targets: the worker's peak RSS for six hours <= CEILING_MB, and at most RATIO_LIMIT
times its peak for ten minutes (the baseline measured in the same run): memory does
not grow with the length of the media. The two FFmpeg decoders (audio, frames) run
beside it; their peak is printed too. Each target is printed PASS or MISS; the
benchmark always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.media import preprocess
from bench.procfs import peak_rss_bytes
from tests.fixtures.media import tiny_media
from vidinsight.settings import REPO_ROOT, get_settings

CEILING_MB = 600
RATIO_LIMIT = 1.5
LONG_SECONDS = 6 * 3600
BASELINE_SECONDS = 600


def child(video: Path, seconds: float) -> None:
    """Preprocess ``video`` here; print the peak RSS of this process and of its FFmpegs."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        done = preprocess(video, Path(tmp), seconds)
    print(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - began, 1),
                "chunks": len(done.chunks),
                "scenes": len(done.scene_rows),
                "self_mb": peak_rss_mb(),
                "ffmpeg_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM), in MB.

    Not ``ru_maxrss``: Linux carries the high-water mark of the process that forked us
    across exec into it, so a child of a 1 GB pytest would report 1 GB. VmHWM belongs
    to the address space made at exec. (The FFmpeg figure, ``ru_maxrss`` of children,
    is an upper bound for the same reason: it includes this process's RSS when it
    spawned them.)
    """
    return peak_rss_bytes(os.getpid()) / (1024 * 1024)


def measure(video: Path, seconds: float) -> dict[str, float]:
    """Run ``child`` in a fresh process: peaks of one run, untouched by earlier ones."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.media_memory", "--child", str(video), str(seconds)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), float(args.child[1]))
        return
    folder = get_settings().state_dir / "bench-media" / "memory-v1"
    baseline_video = tiny_media(folder, BASELINE_SECONDS)
    long_video = tiny_media(folder, LONG_SECONDS)
    baseline = measure(baseline_video, BASELINE_SECONDS)
    long = measure(long_video, LONG_SECONDS)
    for name, run in (("10 min", baseline), ("6 h", long)):
        print(f"   {name:>6}: {run['seconds']:7.1f} s, {run['chunks']:4.0f} chunks, "
              f"{run['scenes']:4.0f} scenes; worker peak RSS {run['self_mb']:6.1f} MB, "
              f"largest FFmpeg {run['ffmpeg_mb']:6.1f} MB")  # fmt: skip
    ratio = long["self_mb"] / baseline["self_mb"]
    print(f"M  six hours: worker peak RSS {long['self_mb']:.0f} MB "
          f"[{verdict(long['self_mb'] <= CEILING_MB)} <= {CEILING_MB} MB]; "
          f"{ratio:.2f}x the ten-minute baseline [{verdict(ratio <= RATIO_LIMIT)} "
          f"<= {RATIO_LIMIT}x]; with both FFmpegs at their peak "
          f"{long['self_mb'] + 2 * long['ffmpeg_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
