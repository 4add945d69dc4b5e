"""``vidinsight costs report`` and ``vidinsight customers`` against the real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from cli.main import main
from sinks.customers import customer_for_key, get_customer
from sinks.db import Pool
from sinks.ledger import CostEvent, record_cost_events
from vidinsight.settings import REPO_ROOT

DAY1 = datetime(2026, 3, 30, 23, 59, 59, 999_000, tzinfo=UTC)
DAY2 = datetime(2026, 3, 31, 0, 0, tzinfo=UTC)


def _event(customer: str, job: str, stage: str, model: str, amount: int, at: datetime) -> CostEvent:
    return CostEvent(
        event_id=f"evt-{uuid.uuid4()}",
        customer_id=customer,
        job_id=job,
        stage=stage,
        provider="openai",
        model=model,
        unit="tokens",
        quantity=10.0,
        amount_usd_micros=amount,
        occurred_at=at,
    )


@pytest.fixture
def customer(db_pool: Pool) -> str:
    """A customer with events over two jobs, three stages, two models and two UTC days."""
    customer_id = f"cus-report-{uuid.uuid4().hex[:8]}"
    job_a, job_b = f"job-a-{uuid.uuid4().hex[:6]}", f"job-b-{uuid.uuid4().hex[:6]}"
    events = [
        _event(customer_id, job_a, "transcribe", "whisper-1", 1_234_567, DAY1),
        _event(customer_id, job_a, "analyse", "gpt-4o-mini", 1, DAY1),
        _event(customer_id, job_b, "analyse", "gpt-4o-mini", 999_999, DAY2),
        _event(customer_id, job_b, "synthesise", "gpt-4o-mini", 7, DAY2 + timedelta(hours=5)),
    ]
    with db_pool.connection() as conn:
        record_cost_events(conn, events)
    return customer_id


def _ledger(db_pool: Pool, customer: str, key_sql: str, where: str = "TRUE") -> dict[str, int]:
    with db_pool.connection() as conn:
        rows = conn.execute(
            f"SELECT {key_sql} AS key, sum(amount_usd_micros)::bigint AS total FROM cost_ledger"
            f" WHERE customer_id = %s AND {where} GROUP BY 1",
            (customer,),
        ).fetchall()
    return {str(r["key"]): int(r["total"]) for r in rows}


def _report_csv(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, int]:
    assert main(["costs", "report", "--format", "csv", *args]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by = args[args.index("--by") + 1]
    return {row[by]: _micros(row["amount_usd"]) for row in rows}


def _micros(usd: str) -> int:
    whole, fraction = usd.split(".")
    return int(whole) * 1_000_000 + int(fraction)


@pytest.mark.parametrize(
    ("by", "key_sql"),
    [
        ("stage", "stage"),
        ("job", "job_id"),
        ("day", "(occurred_at AT TIME ZONE 'UTC')::date::text"),
        ("model", "provider || '/' || model"),
    ],
)
def test_report_prints_the_same_totals_as_the_ledger(
    capsys: pytest.CaptureFixture[str], db_pool: Pool, customer: str, by: str, key_sql: str
) -> None:
    report = _report_csv(capsys, "--customer", customer, "--by", by)
    assert report == _ledger(db_pool, customer, key_sql)
    assert len(report) >= 2


def test_a_date_range_keeps_whole_utc_days(
    capsys: pytest.CaptureFixture[str], db_pool: Pool, customer: str
) -> None:
    day2 = "occurred_at >= '2026-03-31T00:00:00Z'"
    for by in ("stage", "day"):
        report = _report_csv(capsys, "--customer", customer, "--by", by, "--from", "2026-03-31")
        key = "stage" if by == "stage" else "(occurred_at AT TIME ZONE 'UTC')::date::text"
        assert report == _ledger(db_pool, customer, key, day2)
    only_day1 = _report_csv(
        capsys, "--customer", customer, "--by", "job", "--from", "2026-03-30", "--to", "2026-03-30"
    )
    assert sum(only_day1.values()) == 1_234_568


def test_table_format_ends_with_the_exact_total(
    capsys: pytest.CaptureFixture[str], customer: str
) -> None:
    assert main(["costs", "report", "--customer", customer, "--by", "stage"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["customer_id", "stage", "events", "amount_usd"]
    assert lines[-1].split() == ["TOTAL", "4", "2.234574"]


def test_customers_create_set_budget_and_revoke_key(
    capsys: pytest.CaptureFixture[str], db_pool: Pool
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "customers", "create", "Acme Films"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    created = json.loads(out)
    customer_id, api_key = created["customer_id"], created["api_key"]
    with db_pool.connection() as conn:
        assert customer_for_key(conn, api_key) == customer_id
    assert main(["customers", "set-budget", customer_id, "1234.5"]) == 0
    with db_pool.connection() as conn:
        row = get_customer(conn, customer_id)
        assert row is not None and row["monthly_budget_usd_micros"] == 1_234_500_000
    assert main(["customers", "set-budget", customer_id, "0.0000001"]) == 2  # below a micro
    assert main(["customers", "set-budget", "cus-nobody", "5"]) == 1
    capsys.readouterr()
    assert main(["customers", "issue-key", customer_id]) == 0  # rotation: a second key
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["customer_id"] == customer_id and rotated["api_key"] != api_key
    assert main(["customers", "issue-key", "cus-nobody"]) == 1
    assert main(["customers", "revoke-key", api_key]) == 0
    assert main(["customers", "revoke-key", api_key]) == 1
    with db_pool.connection() as conn:
        assert customer_for_key(conn, api_key) is None
        assert customer_for_key(conn, rotated["api_key"]) == customer_id
    capsys.readouterr()


def test_report_without_a_database_fails_with_a_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidinsight.settings import get_settings

    monkeypatch.setenv("VI_DATABASE_URL", "postgresql://vidinsight:vidinsight@127.0.0.1:1/x")
    get_settings.cache_clear()
    try:
        assert main(["costs", "report", "--by", "day"]) == 2
    finally:
        get_settings.cache_clear()
    assert "database_unavailable" in capsys.readouterr().err


def test_dates_are_checked_before_the_database_is_touched() -> None:
    with pytest.raises(SystemExit):
        main(["costs", "report", "--from", str(date(2026, 1, 1)) + "x"])
