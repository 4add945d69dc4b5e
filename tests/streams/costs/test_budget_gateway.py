"""Cost events through the real aggregator reach the real gateway: 402 once spent, and
the job's costs as the gateway reports them equal ``vidinsight costs report``.

The gateway is served by uvicorn in-process (tests/gateway/conftest.py's helpers); the
aggregator is its own process. The cost events come from the test, not from a processed
video: the pipeline that would emit them is built and tested elsewhere.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

import pytest

from cli.main import main
from sinks.customers import set_budget
from sinks.db import transaction
from tests.gateway.conftest import (
    FirebaseKeys,
    RunningGateway,
    gateway_settings,
    new_customer,
    start_gateway,
    stop_gateway,
)
from tests.streams.costs.harness import CostsHarness, cost_event
from vidinsight.settings import Settings

BODY = {"source_url": "https://example.com/a.mp4"}


@pytest.fixture
def gateway(settings: Settings) -> Iterator[RunningGateway]:
    keys = FirebaseKeys()
    running = start_gateway(gateway_settings(settings, keys))
    yield running
    stop_gateway(running)
    keys.close()


def test_spend_recorded_by_the_aggregator_stops_the_next_job_with_budget_exceeded(
    costs: CostsHarness, gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = new_customer(costs.pool, "budgeted")
    with transaction(costs.pool) as conn:
        set_budget(conn, customer.customer_id, 1_000_000)
    with gateway.client(customer) as client:
        accepted = client.post("/v1/jobs", json=BODY)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
    costs.start()
    costs.send(
        [
            cost_event(customer.customer_id, job_id, "transcribe", 600_000),
            cost_event(customer.customer_id, job_id, "analyse", 399_999),
        ]
    )
    costs.wait_until(lambda: costs.ledger([customer.customer_id]) != {}, "first events")
    with gateway.client(customer) as client:
        assert client.post("/v1/jobs", json=BODY).status_code == 202  # 1 micro-dollar left
    sent_at = time.monotonic()
    costs.send([cost_event(customer.customer_id, job_id, "synthesise", 1)])
    with gateway.client(customer) as client:
        while True:
            refused = client.post("/v1/jobs", json=BODY)
            if refused.status_code != 202:
                break
            assert time.monotonic() - sent_at < 5, "gateway still accepting 5 s after crossing"
            time.sleep(0.2)  # each accepted probe is a job: stay far below the quota
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["reason"] == "budget_exceeded"
        job_costs = client.get(f"/v1/jobs/{job_id}/costs").json()
    assert job_costs["total_usd_micros"] == 1_000_000
    assert set(job_costs["by_stage"]) == {"transcribe", "analyse", "synthesise"}
    capsys.readouterr()
    assert (
        main(
            [
                "costs",
                "report",
                "--customer",
                customer.customer_id,
                "--by",
                "job",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["job"], r["amount_usd"]) for r in rows] == [(job_id, "1.000000")]
