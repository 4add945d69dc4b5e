"""examples/upstream_producer.py, run as a customer's engineer would, against the whole platform.

The example produces a JobRequested in the registry's wire format straight to
``vi.jobs.requested`` (no gateway), and consumes the job's JobCompleted with a consumer
group of its own; the platform's workers do the rest.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sinks.blobs import BlobStore
from tests.fixtures.meeting import Meeting
from tests.fixtures.platform import Platform
from vidinsight.settings import REPO_ROOT, Settings

EXAMPLE = REPO_ROOT / "examples" / "upstream_producer.py"
JOB_TIMEOUT_SECONDS = 240


def run_example(
    settings: Settings, workdir: Path, customer_id: str, source_uri: str, job_id: str
) -> subprocess.CompletedProcess[str]:
    """The example in isolated mode (-I: no PYTHONPATH, no project on sys.path) elsewhere."""
    args = {
        "--bootstrap": settings.kafka_bootstrap,
        "--registry-url": settings.registry_url,
        "--customer-id": customer_id,
        "--source-uri": source_uri,
        "--job-id": job_id,
        "--group-id": f"upstream-test-{uuid.uuid4().hex[:8]}",
        "--timeout": str(JOB_TIMEOUT_SECONDS),
    }
    return subprocess.run(
        [sys.executable, "-I", str(EXAMPLE), *(part for pair in args.items() for part in pair)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_SECONDS + 60,
    )


def consumed_event(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JobCompleted the example printed (its only line on stdout)."""
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    return dict(json.loads(lines[0]))


def test_the_example_imports_only_confluent_kafka_and_the_standard_library() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    modules = {
        str(node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.level)
    }
    assert modules - {"confluent_kafka", "__future__"} <= sys.stdlib_module_names, modules


def test_a_job_produced_upstream_completes_and_its_job_completed_is_consumed(
    platform: Platform, settings: Settings, meeting: Meeting, tmp_path: Path
) -> None:
    job_id = f"job-upstream-{uuid.uuid4()}"
    key = f"uploads/{platform.customer_id}/{job_id}/{meeting.video.name}"
    source_uri = BlobStore.from_settings(settings).put_file(meeting.video, key)
    done = run_example(settings, tmp_path, platform.customer_id, source_uri, job_id)
    assert done.returncode == 0, done.stderr
    event = consumed_event(done)
    assert (event["job_id"], event["status"]) == (job_id, "completed")
    assert event["customer_id"] == platform.customer_id
    assert event["insights_uri"] and event["reason"] is None
    with platform.client() as client:  # the same job, as its customer sees it
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "completed"


@pytest.mark.parametrize("source_uri", ["ftp://media.example/talk.mp4"])
def test_a_job_the_platform_rejects_is_consumed_as_failed_with_its_reason(
    platform: Platform, settings: Settings, tmp_path: Path, source_uri: str
) -> None:
    job_id = f"job-upstream-{uuid.uuid4()}"
    done = run_example(settings, tmp_path, platform.customer_id, source_uri, job_id)
    assert done.returncode == 1, done.stderr
    event = consumed_event(done)
    assert (event["job_id"], event["status"], event["reason"]) == (
        job_id,
        "failed",
        "source_forbidden",
    )
    assert f"job {job_id} failed: source_forbidden" in done.stderr
