"""Bad messages go to the stage's DLQ with every header, never block their partition,
and a dead letter replayed after its cause is fixed completes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from streams.runtime.dead_letter import HEADER_NAMES, HEADER_PREFIX, header_map
from tests.fixtures.kafka import consume_from, produce_to
from tests.fixtures.workers import EchoPipeline, new_job_ids
from vidinsight.settings import REPO_ROOT


def test_garbage_and_failing_messages_are_dead_lettered_and_the_rest_flow(
    echo_pipeline: EchoPipeline,
) -> None:
    bootstrap = echo_pipeline.settings.kafka_bootstrap
    garbage_key = "garbage-" + new_job_ids(1)[0]
    permanent, unknown = new_job_ids(2)
    behind = new_job_ids(5)
    # One key for all, so all share one partition: the bad ones sit in front of the good.
    produce_to(bootstrap, echo_pipeline.topics["input"], b"\x00not avro at all", key=garbage_key)
    echo_pipeline.submit(permanent, fail="permanent")
    echo_pipeline.submit(unknown, fail="unknown")
    for job_id in behind:
        echo_pipeline.submit(job_id)
    echo_pipeline.start_worker("w1")
    statuses = echo_pipeline.wait_finished([garbage_key, permanent, unknown, *behind])
    assert {k: statuses[k] for k in (garbage_key, permanent, unknown)} == {
        garbage_key: "dead_lettered",
        permanent: "dead_lettered",
        unknown: "dead_lettered",
    }
    assert all(statuses[j] == "succeeded" for j in behind)

    letters = consume_from(bootstrap, echo_pipeline.topics["dlq"], 3)
    by_key = {bytes(m.key() or b"").decode(): m for m in letters}
    assert set(by_key) == {garbage_key, permanent, unknown}
    for message in letters:
        headers = header_map(message.headers())
        assert {HEADER_PREFIX + name for name in HEADER_NAMES} <= set(headers)
        assert headers["vi-original-topic"] == echo_pipeline.topics["input"]
        assert headers["vi-stage"] == "echo"
    reasons = {k: header_map(m.headers())["vi-reason"] for k, m in by_key.items()}
    assert reasons == {
        garbage_key: "undecodable_message",
        permanent: "corrupt_media",
        unknown: "unexpected_error",
    }
    assert by_key[garbage_key].value() is not None
    decoded = echo_pipeline.codec.decode(echo_pipeline.topics["dlq"], by_key[garbage_key].value())
    assert decoded["original_value"] == b"\x00not avro at all"
    unknown_headers = header_map(by_key[unknown].headers())
    assert unknown_headers["vi-attempts"] == "3"
    assert unknown_headers["vi-exception-type"] == "RuntimeError"
    # Each failed job is announced on the stage's failure topic with its reason; the
    # garbage message has no job anyone could know, so it is only parked.
    announced = {
        bytes(m.key() or b"").decode(): echo_pipeline.codec.decode(
            echo_pipeline.topics["output"], m.value()
        )
        for m in consume_from(bootstrap, echo_pipeline.topics["output"], 7)
    }
    assert {k: (v["status"], v["reason"]) for k, v in announced.items() if k not in behind} == {
        permanent: ("failed", "corrupt_media"),
        unknown: ("failed", "unexpected_error"),
    }
    # Permanent: dead-lettered at once; unknown: the bounded retries, then dead-lettered.
    assert echo_pipeline.executions([permanent, unknown]) == {permanent: 1, unknown: 3}
    # Each retry's log line names the attempt that failed (I4), not the first one.
    retries = [
        line["attempt"]
        for line in echo_pipeline.workers[0].log_lines()
        if line.get("job_id") == unknown and line.get("msg", "").startswith("handler failed")
    ]
    assert retries == [1, 2]


def test_dlq_replay_after_the_cause_is_fixed_completes(
    echo_pipeline: EchoPipeline, tmp_path: Path
) -> None:
    [job_id] = new_job_ids(1)
    needed = tmp_path / "needed-input"
    echo_pipeline.submit(job_id, requires_file=str(needed))
    echo_pipeline.start_worker("w1")
    assert echo_pipeline.wait_finished([job_id]) == {job_id: "dead_lettered"}

    listing = _cli(echo_pipeline, "list")
    assert job_id in listing and "source_unreachable" in listing

    needed.write_text("now it exists")
    assert "replayed 1 dead letter" in _cli(echo_pipeline, "replay", "--job", job_id)
    assert _wait_status(echo_pipeline, job_id, "succeeded") == "succeeded"


def _cli(pipeline: EchoPipeline, action: str, *args: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "dlq",
            action,
            "echo",
            "--topic",
            pipeline.topics["dlq"],
            *args,
        ],
        cwd=REPO_ROOT,
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _wait_status(pipeline: EchoPipeline, job_id: str, status: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    current = ""
    while time.monotonic() < deadline:
        current = pipeline.finished([job_id]).get(job_id, "")
        if current == status:
            break
        time.sleep(0.25)
    return current
