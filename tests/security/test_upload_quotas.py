"""Uploads bounded and paid for, attacked through the real gateway.

A customer who floods uploads meets its count and byte quotas (413
``upload_quota_exceeded``, before the body where its length is declared, mid-stream
where it is not), concurrently or not, and nobody else loses anything; nobody deletes
another tenant's upload; the sweep (``vidinsight uploads expire``, the operator's
command) removes expired unreferenced uploads, keeps the ones jobs need, and bills
their storage through the real cost aggregator into the customer's ledger exactly once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.upload_storage import HOURS_PER_MONTH
from sinks.blobs import PARTIAL_PREFIX, BlobStore
from sinks.db import Pool, transaction
from sinks.jobs import set_status
from sinks.uploads import UploadQuota, UploadUsage, begin_upload, set_upload_quota, upload_usage
from tests.fixtures.network import free_port
from tests.gateway.conftest import (
    Customer,
    GatewayFactory,
    RunningGateway,
    customer,
    firebase_keys,
    gateway_factory,
    new_customer,
    other_customer,
)
from tests.gateway.test_uploads import chunks
from tests.streams.costs.harness import CostsHarness
from vidinsight.settings import REPO_ROOT, Settings

__all__ = ["customer", "firebase_keys", "gateway_factory", "other_customer"]

MEDIA = {"Content-Type": "video/mp4"}
MIB = 1024 * 1024
# Micro-dollars per byte-month in this test's price book: large enough to see in cents.
STORAGE_PRICE = Decimal(1)


def blob_file(gateway: RunningGateway, customer: Customer, upload_id: str) -> Path:
    return gateway.settings.state_dir / "blobs" / "uploads" / customer.customer_id / upload_id


def uploaded(gateway: RunningGateway, customer: Customer, size: int) -> str:
    with gateway.client(customer) as client:
        answer = client.post("/v1/uploads", content=os.urandom(size), headers=MEDIA)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["upload_id"])


def assert_over_quota(answer: httpx.Response, quota_text: str, settings: Settings) -> None:
    """413 with the reason code and a message naming the quota, never a server path."""
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["reason"] == "upload_quota_exceeded"
    assert quota_text in error["message"]
    assert str(settings.state_dir) not in error["message"]
    assert "file://" not in error["message"]


def _read_answer(conn: socket.socket) -> str:
    """What the server answered, read until its JSON error body is complete."""
    data = b""
    while b"}}" not in data:
        piece = conn.recv(65536)
        if not piece:
            break
        data += piece
    return data.decode()


def listing(gateway: RunningGateway, customer: Customer) -> dict[str, Any]:
    with gateway.client(customer) as client:
        answer = client.get("/v1/uploads")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_over_the_count_quota_only_that_customer_is_refused(
    gateway_factory: GatewayFactory, customer: Customer, other_customer: Customer
) -> None:
    gateway = gateway_factory()
    _vidinsight("uploads", "set-quota", customer.customer_id, "--count", "3", "--bytes", "default")
    mine = [uploaded(gateway, customer, 1000 + n) for n in range(3)]
    with gateway.client(customer) as client:
        refused = client.post("/v1/uploads", content=os.urandom(1000), headers=MEDIA)
    assert_over_quota(refused, "at most 3 uploads", gateway.settings)

    theirs = [uploaded(gateway, other_customer, 2000 + n) for n in range(4)]

    assert {u["upload_id"] for u in listing(gateway, customer)["uploads"]} == set(mine)
    assert {u["upload_id"] for u in listing(gateway, other_customer)["uploads"]} == set(theirs)
    assert all(blob_file(gateway, customer, upload_id).exists() for upload_id in mine)
    assert all(blob_file(gateway, other_customer, upload_id).exists() for upload_id in theirs)
    with gateway.client(customer) as client:
        assert client.delete(f"/v1/uploads/{mine[0]}").status_code == 204
    uploaded(gateway, customer, 1000)  # room again once one is deleted


def test_over_the_byte_quota_refused_before_the_body_or_cut_off_mid_stream(
    gateway_factory: GatewayFactory, customer: Customer, other_customer: Customer, db_pool: Pool
) -> None:
    gateway = gateway_factory(upload_quota_step_bytes=256 * 1024)
    with transaction(db_pool) as conn:
        assert set_upload_quota(conn, customer.customer_id, None, 2 * MIB)
    held = uploaded(gateway, customer, MIB)

    # Declared too large: answered before a byte of the body is sent.
    with socket.create_connection(("127.0.0.1", gateway.settings.gateway_port), timeout=10) as s:
        s.sendall(
            b"POST /v1/uploads HTTP/1.1\r\nHost: gateway\r\nContent-Type: video/mp4\r\n"
            + f"Authorization: Bearer {customer.api_key}\r\n".encode()
            + f"Content-Length: {MIB + 1}\r\n\r\n".encode()
        )
        raw = _read_answer(s)
    assert raw.startswith("HTTP/1.1 413"), raw
    assert '"upload_quota_exceeded"' in raw
    assert f"at most {2 * MIB} bytes" in raw

    with gateway.client(customer) as client:
        streamed = client.post("/v1/uploads", content=chunks(3 * MIB), headers=MEDIA)
        multipart = client.post(
            "/v1/uploads", files={"file": ("big.mp4", os.urandom(MIB + 1), "video/mp4")}
        )
    for answer in (streamed, multipart):
        assert_over_quota(answer, f"at most {2 * MIB} bytes", gateway.settings)

    # Nothing of the refused uploads remains, nothing is held for them; others unaffected.
    folder = blob_file(gateway, customer, held).parent
    assert sorted(p.name for p in folder.iterdir()) == [held]
    with transaction(db_pool) as conn:
        usage = upload_usage(conn, customer.customer_id)
    assert (usage.count, usage.bytes) == (1, MIB)
    assert listing(gateway, customer)["quota"] == {
        "max_count": gateway.settings.upload_max_count_per_customer,
        "max_bytes": 2 * MIB,
        "count": 1,
        "bytes": MIB,
    }
    uploaded(gateway, other_customer, 3 * MIB)
    with gateway.client(customer) as client:
        fits = client.post("/v1/uploads", content=chunks(MIB), headers=MEDIA)
    assert fits.status_code == 201, fits.text  # exactly up to the quota


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_concurrent_uploads_cannot_overshoot_the_quotas(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool, chunked: bool
) -> None:
    gateway = gateway_factory(upload_quota_step_bytes=128 * 1024)
    quota_bytes, size, racers = 5 * MIB, 3 * MIB // 2, 8
    with transaction(db_pool) as conn:
        assert set_upload_quota(conn, customer.customer_id, None, quota_bytes)
    start = threading.Barrier(racers)
    answers: list[httpx.Response] = []

    def race() -> None:
        body = chunks(size) if chunked else os.urandom(size)
        with gateway.client(customer) as client:
            start.wait()
            answers.append(client.post("/v1/uploads", content=body, headers=MEDIA))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    accepted = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(answers) == racers
    assert len(accepted) <= quota_bytes // size
    if not chunked:  # declared lengths are reserved whole: exactly what fits is accepted
        assert len(accepted) == quota_bytes // size
    for answer in refused:
        assert_over_quota(answer, f"at most {quota_bytes} bytes", gateway.settings)
    with transaction(db_pool) as conn:
        usage = upload_usage(conn, customer.customer_id)
    assert (usage.count, usage.bytes) == (len(accepted), len(accepted) * size)
    folder = gateway.settings.state_dir / "blobs" / "uploads" / customer.customer_id
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        a.json()["upload_id"] for a in accepted
    )


def test_concurrent_uploads_cannot_overshoot_the_count(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool
) -> None:
    gateway = gateway_factory()
    with transaction(db_pool) as conn:
        assert set_upload_quota(conn, customer.customer_id, 2, None)
    start = threading.Barrier(6)
    statuses: list[int] = []

    def race() -> None:
        with gateway.client(customer) as client:
            start.wait()
            statuses.append(
                client.post("/v1/uploads", content=chunks(MIB), headers=MEDIA).status_code
            )

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 201, 413, 413, 413, 413]


def test_only_the_owner_deletes_an_upload(
    gateway_factory: GatewayFactory, customer: Customer, other_customer: Customer
) -> None:
    gateway = gateway_factory()
    upload_id = uploaded(gateway, customer, 4096)
    blob = blob_file(gateway, customer, upload_id)

    with gateway.client(other_customer) as client:
        theirs = client.delete(f"/v1/uploads/{upload_id}")
        unknown = client.delete("/v1/uploads/upl_0123456789abcdef0123456789abcdef")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["reason"] == unknown.json()["error"]["reason"] == "not_found"
    assert theirs.json()["error"]["message"] == f"no upload {upload_id}"
    assert blob.read_bytes()
    assert [u["upload_id"] for u in listing(gateway, customer)["uploads"]] == [upload_id]
    assert listing(gateway, other_customer)["uploads"] == []

    with gateway.client(customer) as client:
        deleted = client.delete(f"/v1/uploads/{upload_id}")
        again = client.delete(f"/v1/uploads/{upload_id}")
    assert deleted.status_code == 204
    assert not blob.exists()
    assert again.status_code == 404
    assert listing(gateway, customer)["uploads"] == []


def test_an_upload_a_job_reads_is_not_deleted(
    gateway_factory: GatewayFactory, customer: Customer
) -> None:
    gateway = gateway_factory()
    upload_id = uploaded(gateway, customer, 4096)
    with gateway.client(customer) as client:
        job = client.post("/v1/jobs", json={"upload_id": upload_id})
        assert job.status_code == 202, job.text
        in_use = client.delete(f"/v1/uploads/{upload_id}")
        assert in_use.status_code == 409
        assert in_use.json()["error"]["reason"] == "upload_in_use"
        assert blob_file(gateway, customer, upload_id).exists()
        [view] = listing(gateway, customer)["uploads"]
        assert view["expires_at"] is None  # kept while the job may read it

        assert client.delete(f"/v1/jobs/{job.json()['job_id']}").status_code == 200
        assert client.delete(f"/v1/uploads/{upload_id}").status_code == 204
    assert not blob_file(gateway, customer, upload_id).exists()


def _age(pool: Pool, upload_id: str, hours: float) -> datetime:
    """Make an upload as old as if it had been stored ``hours`` ago; return that instant."""
    stored = datetime.now(UTC) - timedelta(hours=hours)
    with transaction(pool) as conn:
        conn.execute(
            "UPDATE uploads SET created_at = %s, completed_at = %s, billed_until = %s"
            " WHERE upload_id = %s",
            (stored, stored, stored, upload_id),
        )
    return stored


def _finish_job(pool: Pool, job_id: str, hours_ago: float) -> None:
    with transaction(pool) as conn:
        assert set_status(conn, job_id, "completed")
        conn.execute(
            "UPDATE jobs SET completed_at = now() - %s WHERE job_id = %s",
            (timedelta(hours=hours_ago), job_id),
        )


def _expire_command(costs: CostsHarness, pricing: Path) -> dict[str, Any]:
    """``vidinsight uploads expire`` as an operator (or a cron job) runs it, again while
    another sweeper (a gateway's) holds the sweep lock."""
    deadline = time.monotonic() + 60
    report = _run_expire(costs, pricing)
    while report["skipped"]:
        assert time.monotonic() < deadline, "another sweeper held the lock for 60 s"
        time.sleep(0.5)
        report = _run_expire(costs, pricing)
    return report


def _run_expire(costs: CostsHarness, pricing: Path) -> dict[str, Any]:
    return _vidinsight(
        "uploads",
        "expire",
        VI_COSTS_INPUT_TOPIC=costs.costs_topic,
        VI_PRICING_FILE=str(pricing),
    )


def _vidinsight(*args: str, **env: str) -> dict[str, Any]:
    """Run an operator command; the JSON it prints last."""
    done = _run_cli(*args, **env)
    assert done.returncode == 0, done.stderr
    return _printed(done)


def _run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _printed(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return printed


def _expected_micros(size: int, hours: float) -> int:
    byte_months = Decimal(str(size * hours / HOURS_PER_MONTH))
    return int((byte_months * STORAGE_PRICE).to_integral_value(rounding="ROUND_HALF_UP"))


def test_the_sweep_expires_what_no_job_needs_and_bills_storage_once(
    gateway_factory: GatewayFactory, costs: CostsHarness, db_pool: Pool, tmp_path: Path
) -> None:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(f'[providers.storage.blob]\nstorage_bytes = "{STORAGE_PRICE}"\n')
    gateway = gateway_factory(costs_input_topic=costs.costs_topic, pricing_file=str(pricing))
    alice = new_customer(db_pool, "alice")
    ttl = gateway.settings.upload_ttl_hours
    sizes = {"lone": 300_000, "queued": 200_000, "recent": 150_000, "old": 100_000}
    ids = {name: uploaded(gateway, alice, size) for name, size in sizes.items()}
    jobs = {}
    with gateway.client(alice) as client:
        for name in ("queued", "recent", "old"):
            answer = client.post("/v1/jobs", json={"upload_id": ids[name]})
            assert answer.status_code == 202, answer.text
            jobs[name] = answer.json()["job_id"]
    _finish_job(db_pool, jobs["recent"], hours_ago=1)
    _finish_job(db_pool, jobs["old"], hours_ago=ttl + 1)
    for upload_id in ids.values():
        _age(db_pool, upload_id, hours=ttl + 1)

    costs.start()
    _expire_command(costs, pricing)
    second = _expire_command(costs, pricing)

    assert not blob_file(gateway, alice, ids["lone"]).exists()
    assert not blob_file(gateway, alice, ids["old"]).exists()
    assert blob_file(gateway, alice, ids["queued"]).exists()
    assert blob_file(gateway, alice, ids["recent"]).exists()
    views = {u["upload_id"]: u for u in listing(gateway, alice)["uploads"]}
    assert set(views) == {ids["queued"], ids["recent"]}
    assert views[ids["queued"]]["expires_at"] is None
    assert views[ids["recent"]]["expires_at"] is not None
    assert second["expired"] == second["billed"] == 0  # a second pass finds nothing to do

    # Deleted uploads pay for all they held; kept ones for each whole billing period.
    period = gateway.settings.upload_billing_period_hours
    billed_hours = period * ((ttl + 1) // period)
    expected = {
        ids["lone"]: (sizes["lone"], ttl + 1),
        ids["old"]: (sizes["old"], ttl + 1),
        ids["queued"]: (sizes["queued"], billed_hours),
        ids["recent"]: (sizes["recent"], billed_hours),
    }

    def ledger() -> list[dict[str, Any]]:
        with db_pool.connection() as conn:
            return conn.execute(
                "SELECT job_id, stage, unit, quantity, amount_usd_micros FROM cost_ledger"
                " WHERE customer_id = %s ORDER BY job_id",
                (alice.customer_id,),
            ).fetchall()

    costs.wait_until(lambda: len(ledger()) >= len(expected), "storage charges in the ledger")
    lines = ledger()
    assert sorted(line["job_id"] for line in lines) == sorted(expected)  # each once
    for line in lines:
        size, hours = expected[line["job_id"]]
        assert (line["stage"], line["unit"]) == ("uploads", "storage_bytes")
        assert line["quantity"] == pytest.approx(size * hours / HOURS_PER_MONTH, rel=1e-3)
        assert line["amount_usd_micros"] == pytest.approx(_expected_micros(size, hours), rel=1e-3)

    total = sum(int(line["amount_usd_micros"]) for line in lines)
    with gateway.client(alice) as client:
        usage = client.get("/v1/usage").json()
    assert usage["total_usd_micros"] == total
    assert sum(day["by_stage"].get("uploads", 0) for day in usage["days"]) == pytest.approx(
        total / 1_000_000
    )


def _ledger(pool: Pool, customer_id: str) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT job_id, unit FROM cost_ledger WHERE customer_id = %s", (customer_id,)
        ).fetchall()


def test_an_upload_the_sweep_cannot_remove_stops_nobody_elses_expiry_or_billing(
    gateway_factory: GatewayFactory, costs: CostsHarness, db_pool: Pool, tmp_path: Path
) -> None:
    """The blob store's root moved (VI_BLOB_ROOT_URI changed): an old upload's blob is no
    longer the store's to delete. The sweep leaves it and its file alone and goes on."""
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(f'[providers.storage.blob]\nstorage_bytes = "{STORAGE_PRICE}"\n')
    gateway = gateway_factory(costs_input_topic=costs.costs_topic, pricing_file=str(pricing))
    stranded, other = new_customer(db_pool, "stranded"), new_customer(db_pool, "other")
    stuck_id = uploaded(gateway, stranded, 50_000)
    other_id = uploaded(gateway, other, 80_000)
    old_root = tmp_path / "old-root" / "uploads" / stranded.customer_id / stuck_id
    old_root.parent.mkdir(parents=True)
    old_root.write_bytes(b"kept")
    ttl = gateway.settings.upload_ttl_hours
    _age(db_pool, stuck_id, hours=ttl + 2)  # the older: the sweep meets it first
    _age(db_pool, other_id, hours=ttl + 1)
    with transaction(db_pool) as conn:
        conn.execute(
            "UPDATE uploads SET blob_uri = %s WHERE upload_id = %s",
            (old_root.as_uri(), stuck_id),
        )
    try:
        costs.start()
        report = _expire_command(costs, pricing)

        assert report["failed"] >= 1
        assert report["expired"] >= 1
        assert old_root.read_bytes() == b"kept"  # nothing outside the store is touched
        assert not blob_file(gateway, other, other_id).exists()
        assert listing(gateway, other)["uploads"] == []
        assert [u["upload_id"] for u in listing(gateway, stranded)["uploads"]] == [stuck_id]
        # Both are billed: the other for all it held, the stranded one for its periods.
        costs.wait_until(
            lambda: (
                bool(_ledger(db_pool, other.customer_id))
                and bool(_ledger(db_pool, stranded.customer_id))
            ),
            "both customers' storage charges in the ledger",
        )
        assert [line["job_id"] for line in _ledger(db_pool, other.customer_id)] == [other_id]
        assert [line["job_id"] for line in _ledger(db_pool, stranded.customer_id)] == [stuck_id]
    finally:
        with transaction(db_pool) as conn:
            conn.execute("DELETE FROM uploads WHERE upload_id = %s", (stuck_id,))


def test_an_upload_cut_off_by_a_crash_gives_its_quota_and_its_file_back(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool
) -> None:
    """A gateway that died mid-upload left its row arriving and its partial file; the
    sweep releases both once the receiving timeout has passed, a live upload's file not."""
    gateway = gateway_factory()
    _vidinsight("uploads", "set-quota", customer.customer_id, "--count", "1", "--bytes", "default")
    folder = gateway.settings.state_dir / "blobs" / "uploads" / customer.customer_id
    folder.mkdir(parents=True, exist_ok=True)
    crashed_id = "upl_crashed0123456789abcdef0123456"
    with transaction(db_pool) as conn:
        begin_upload(
            conn,
            crashed_id,
            customer.customer_id,
            f"{BlobStore.from_settings(gateway.settings).root_uri}/uploads/"
            f"{customer.customer_id}/{crashed_id}",
            MIB,
            UploadQuota(max_count=1, max_bytes=10 * MIB),
        )
        conn.execute(
            "UPDATE uploads SET created_at = now() - interval '2 minutes' WHERE upload_id = %s",
            (crashed_id,),
        )
    dead = folder / f"{PARTIAL_PREFIX}dead"
    dead.write_bytes(os.urandom(300_000))
    two_minutes_ago = time.time() - 120
    os.utime(dead, (two_minutes_ago, two_minutes_ago))
    live = folder / f"{PARTIAL_PREFIX}live"
    live.write_bytes(os.urandom(1000))

    with gateway.client(customer) as client:
        held = client.post("/v1/uploads", content=os.urandom(1000), headers=MEDIA)
    assert_over_quota(held, "at most 1 uploads", gateway.settings)

    deadline = time.monotonic() + 60
    report = _vidinsight("uploads", "expire", VI_UPLOAD_RECEIVING_TIMEOUT_SECONDS="60")
    while report["skipped"]:
        assert time.monotonic() < deadline, "another sweeper held the lock for 60 s"
        time.sleep(0.5)
        report = _vidinsight("uploads", "expire", VI_UPLOAD_RECEIVING_TIMEOUT_SECONDS="60")

    assert report["partials_removed"] >= 1
    assert not dead.exists()
    assert live.exists()
    with transaction(db_pool) as conn:
        assert upload_usage(conn, customer.customer_id) == UploadUsage(count=0, bytes=0)
    uploaded(gateway, customer, 1000)  # the quota is free again
    live.unlink()


def test_the_sweep_command_fails_while_kafka_leaves_charges_unpublished(
    gateway_factory: GatewayFactory, customer: Customer, db_pool: Pool
) -> None:
    gateway = gateway_factory()
    upload_id = uploaded(gateway, customer, 40_000)
    _age(db_pool, upload_id, hours=gateway.settings.upload_ttl_hours + 1)
    unreachable = {"VI_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    try:
        deadline = time.monotonic() + 60
        done = _run_cli("uploads", "expire", VI_PRODUCER_FLUSH_TIMEOUT_SECONDS="2", **unreachable)
        while done.returncode == 0 and _printed(done)["skipped"]:
            assert time.monotonic() < deadline, "another sweeper held the lock for 60 s"
            time.sleep(0.5)
            done = _run_cli(
                "uploads", "expire", VI_PRODUCER_FLUSH_TIMEOUT_SECONDS="2", **unreachable
            )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "not acknowledged by Kafka" in done.stderr
        assert _printed(done)["unpublished"] >= 1
        with transaction(db_pool) as conn:
            waiting = conn.execute(
                "SELECT count(*) AS n FROM upload_charges"
                " WHERE upload_id = %s AND published_at IS NULL",
                (upload_id,),
            ).fetchone()
        assert waiting is not None and waiting["n"] == 1  # kept for the next pass
    finally:
        with transaction(db_pool) as conn:  # not for another test's sweeper to produce
            conn.execute("DELETE FROM upload_charges WHERE upload_id = %s", (upload_id,))
