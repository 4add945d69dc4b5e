"""A webhook attempt is stored without the receiver's token in its URL's query."""

from __future__ import annotations

import uuid

from sinks.db import Pool, transaction
from sinks.deliveries import job_deliveries, record_delivery


def test_a_delivery_is_stored_without_the_query_of_its_url(db_pool: Pool) -> None:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    url = "https://hooks.example/in/T00?token=s3cr3tT0ken&sig=abc"
    with transaction(db_pool) as conn:
        record_delivery(conn, job_id, url, 1, None, f"{url}: connection refused")
        [row] = job_deliveries(conn, job_id)
    assert row["url"] == "https://hooks.example/in/T00?[redacted]"
    assert "s3cr3tT0ken" not in row["error"] and "connection refused" in row["error"]
