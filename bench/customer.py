"""The bench as the platform's customer: fresh customers that upload, submit and follow
their jobs as any customer would, then clear the large blobs they left behind.

Jobs are uploaded, submitted and followed through the gateway's API. The rest goes
around it: customers are created in PostgreSQL, many jobs' status is read there
(``wait_for_jobs``) so the bench's polling is not billed to the platform, and the blobs
are removed from the local store.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sinks.blobs import BlobStore
from sinks.customers import create_customer
from sinks.db import connect
from vidinsight.settings import Settings

POLL_SECONDS = 0.25
FINISHED = ("completed", "failed", "cancelled")


def new_customer(settings: Settings) -> tuple[str, str]:
    """A customer of this run only: ``(customer_id, api_key)``."""
    with connect(settings) as conn, conn.transaction():
        return create_customer(conn, f"bench-pipeline-{uuid.uuid4().hex[:8]}")


@dataclass
class Customer:
    """A customer of this run with its HTTP client to the gateway."""

    customer_id: str
    client: httpx.Client
    job_ids: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, settings: Settings) -> Customer:
        customer_id, api_key = new_customer(settings)
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{settings.gateway_port}",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        return cls(customer_id, client)

    def upload(self, video: Path) -> str:
        """POST the file as the raw body, streamed; the upload id."""
        with video.open("rb") as body:
            answer = self.client.post(
                "/v1/uploads", content=body, headers={"Content-Type": "video/mp4"}, timeout=600
            )
        answer.raise_for_status()
        return str(answer.json()["upload_id"])

    def submit(self, upload_id: str) -> str:
        answer = self.client.post("/v1/jobs", json={"upload_id": upload_id}, timeout=30)
        answer.raise_for_status()
        self.job_ids.append(str(answer.json()["job_id"]))
        return self.job_ids[-1]


def follow(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job until it ends, printing each change of a stage; its last view."""
    last = ""
    began = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", timeout=30).json()
        line = " ".join(f"{name}:{stage['status']}" for name, stage in view["stages"].items())
        if line != last:
            print(f"  {time.perf_counter() - began:7.1f} s  {view['status']:9} {line}", flush=True)
            last = line
        if view["status"] in FINISHED or time.monotonic() > deadline:
            return view
        time.sleep(POLL_SECONDS)


def wait_for_jobs(settings: Settings, job_ids: Sequence[str], timeout: float) -> None:
    """Wait until every job has ended, reading their status from PostgreSQL: polling
    dozens of jobs through the gateway would bill the bench's reads to the platform."""
    deadline, began, printed = time.monotonic() + timeout, time.perf_counter(), -1.0
    while time.monotonic() < deadline:
        with connect(settings) as conn:
            ended = conn.execute(
                "SELECT count(*) AS n FROM jobs WHERE job_id = ANY(%s) AND status = ANY(%s)",
                (list(job_ids), list(FINISHED)),
            ).fetchone()
        done = int(ended["n"]) if ended else 0
        elapsed = time.perf_counter() - began
        if done == len(job_ids) or elapsed - printed >= 10:
            print(f"  {elapsed:7.1f} s  {done}/{len(job_ids)} jobs ended", flush=True)
            printed = elapsed
        if done == len(job_ids):
            return
        time.sleep(POLL_SECONDS * 2)


def job_costs(client: httpx.Client, job_id: str, settle_seconds: float = 3.0) -> dict[str, Any]:
    """The job's cost by stage, once the aggregator has stopped adding to it.

    Costs reach the ledger through the aggregator a moment after the stage that
    caused them, so the answer is taken when it has not changed for ``settle_seconds``.
    """
    previous: dict[str, Any] = {}
    stable_since = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        costs: dict[str, Any] = client.get(f"/v1/jobs/{job_id}/costs", timeout=30).json()
        if costs.get("total_usd_micros") != previous.get("total_usd_micros"):
            previous, stable_since = costs, time.monotonic()
        elif time.monotonic() - stable_since >= settle_seconds:
            break
        time.sleep(0.5)
    return previous


def delete_blobs(settings: Settings, customers: Sequence[Customer]) -> None:
    """Remove the run's large blobs (the uploads, the audio chunks); keyframes stay."""
    store = BlobStore.from_settings(settings)
    if not store.is_local:
        return
    for customer in customers:
        keys = [f"uploads/{customer.customer_id}", *(f"audio/{j}" for j in customer.job_ids)]
        for key in keys:
            shutil.rmtree(store.local_file(store.uri(key)), ignore_errors=True)
