"""``make soak``: the whole platform through many faults at once, compared with a clean run.

    python -m tests.faults.soak [--profile full|short] [--seed N] [--report-dir DIR]

Runs the batch without faults, then again with the faults a seed draws (printed, and kept
in the report, so a run can be repeated), and writes the report as JSON. Exits 1 when any
invariant was broken. ``tests/faults/test_soak.py`` runs the short profile in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.faults import bad_inputs
from tests.faults.batch import make_batch, talk
from tests.faults.faults import FaultPlan
from tests.faults.harness import Media, Profile, Services, execute
from tests.faults.llm_server import LlmServer
from tests.faults.proxy import TcpProxy
from tests.faults.report import build, summary
from tests.faults.stack import StackPorts
from tests.fixtures.network import Receiver
from topics.admin import RDKAFKA_LOGGER
from vidinsight.settings import get_settings

SHORT = Profile(
    name="short",
    lengths=[6, 15, 30],
    customers=4,
    submit_seconds=15,
    plan=FaultPlan(
        window=(5, 50),
        worker_kills=4,
        registry_down_seconds=8,
        llm_errors_seconds=8,
        llm_hang_seconds=10,
        latency_seconds=8,
        latency_ms=100,
        cut_seconds=3,
        disk_full_seconds=10,
        gateway_kill_window=(2, 12),
    ),
    burst_requests=200,
    burst_seconds=4,
    burst_customers=5,
    max_in_flight=6,
    stall_bound_seconds=90,
    job_timeout_seconds=420,
    max_duration_seconds=60,
    settings={"VI_WEBHOOK_TIMEOUT_SECONDS": "2", "VI_WEBHOOK_MAX_ATTEMPTS": "3"},
)

FULL = Profile(
    name="full",
    lengths=[5, 10, 20, 45, 90, 180, 300, 600],
    customers=4,
    submit_seconds=90,
    plan=FaultPlan(
        window=(10, 270),
        worker_kills=20,
        registry_down_seconds=30,
        llm_errors_seconds=60,
        llm_hang_seconds=30,
        latency_seconds=60,
        latency_ms=200,
        cut_seconds=10,
        disk_full_seconds=60,
        gateway_kill_window=(5, 60),
    ),
    burst_requests=2000,
    burst_seconds=10,
    burst_customers=5,
    max_in_flight=20,
    stall_bound_seconds=180,
    job_timeout_seconds=1800,
    max_duration_seconds=660,
)

PROFILES = {profile.name: profile for profile in (SHORT, FULL)}
BURST_SECONDS = 4


def prepare(profile: Profile, folder: Path, silent_url: str) -> Media:
    """The batch, the burst's video and the bad inputs (made once, reused across runs)."""
    customers = [f"customer-{i}" for i in range(profile.customers)]
    return Media(
        batch=make_batch(folder, profile.lengths, customers),
        burst_video=talk(folder, BURST_SECONDS),
        cases=bad_inputs.make_cases(folder / "bad", profile.max_duration_seconds, silent_url),
        folder=folder,
    )


def run_soak(profile: Profile, seed: int) -> dict[str, Any]:
    """Both runs and the report. The private stacks live under the state folder (PostgreSQL
    runs as its own user, which must reach its data directory; a private temporary folder
    would shut it out); a run that found violations leaves its logs there to read."""
    # The harness's own Kafka readers see the broker restart on purpose: not news.
    RDKAFKA_LOGGER.setLevel(logging.CRITICAL)
    state = get_settings().state_dir
    media_folder = state / "test-media" / "soak"
    work = state / "soak" / f"seed-{seed}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ports = StackPorts()
    with (
        LlmServer() as llm,
        TcpProxy(ports.kafka_proxy, ports.kafka_proxied) as proxy,
        bad_inputs.SilentServer() as silent,
    ):
        receiver = Receiver(failures=0)
        try:
            services = Services(llm, proxy, receiver, silent, ports)
            media = prepare(profile, media_folder, silent.url)
            clean = execute(profile, seed, media, services, work / "fault-free", faulted=False)
            faulted = execute(profile, seed, media, services, work / "with-faults", faulted=True)
        finally:
            receiver.close()
    cancelled = frozenset(case.name for case in media.cases if case.cancel)
    report = build(profile, seed, clean, faulted, len(media.cases), cancelled)
    if report["violations"]:
        report["logs"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="write the JSON there as soak-PROFILE-DATE-seedN.json",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"soak: profile {args.profile}, seed {seed}", flush=True)
    report = run_soak(PROFILES[args.profile], seed)
    print(summary(report))
    if args.report_dir is not None:
        day = report["date"][:10]
        path = args.report_dir / f"soak-{args.profile}-{day}-seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        print(f"soak: report written to {path}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
