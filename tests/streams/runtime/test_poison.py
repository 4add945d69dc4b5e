"""Whatever the runtime itself cannot store or produce for one message is dead-lettered
with a reason, and the next message of the same partition completes (invariant I3)."""

from __future__ import annotations

import time

from streams.runtime.dead_letter import header_map
from tests.fixtures.kafka import consume_from, produce_to
from tests.fixtures.workers import EchoPipeline, new_job_ids

# Above the runtime's limit for one record (VI_MAX_MESSAGE_BYTES, 1 MB by default).
TOO_LARGE_BYTES = 1_500_000


def test_a_nul_key_an_oversized_output_and_a_refused_store_are_parked_in_line(
    echo_pipeline: EchoPipeline,
) -> None:
    nul_job, large, refused, *behind = new_job_ids(6)
    nul_key = f"{nul_job}\x00tail"
    bootstrap, topic = echo_pipeline.settings.kafka_bootstrap, echo_pipeline.topics["input"]
    # All on one partition, the poison in front of the good.
    produce_to(bootstrap, topic, echo_pipeline.request(nul_job), key=nul_key, partition=0)
    echo_pipeline.submit(large, partition=0, output_bytes=str(TOO_LARGE_BYTES))
    echo_pipeline.submit(refused, partition=0, source_uri="file:///tmp/\x00refused.mp4")
    for job_id in behind:
        echo_pipeline.submit(job_id, partition=0)
    echo_pipeline.start_worker("w1")

    stored_nul_key = nul_key.replace("\x00", "\\x00")  # as PostgreSQL can hold it
    statuses = echo_pipeline.wait_finished([stored_nul_key, large, refused, *behind])
    assert statuses == {
        stored_nul_key: "dead_lettered",
        large: "dead_lettered",
        refused: "dead_lettered",
        **{job_id: "succeeded" for job_id in behind},
    }
    letters = consume_from(bootstrap, echo_pipeline.topics["dlq"], 3)
    reasons = {
        header_map(m.headers())["vi-run-key"]: header_map(m.headers())["vi-reason"] for m in letters
    }
    assert reasons == {
        stored_nul_key: "unstorable_message",
        large: "message_too_large",
        refused: "unstorable_message",
    }
    # Nothing too large ever reached the output topic: only the good outputs and the two
    # decodable failures' announcements (the NUL key's job is announced too: its id is clean).
    outputs = consume_from(bootstrap, echo_pipeline.topics["output"], 20, timeout=10)
    assert max(len(m.value() or b"") for m in outputs) < TOO_LARGE_BYTES
    announced = {
        (m.key() or b"").decode(): echo_pipeline.codec.decode(
            echo_pipeline.topics["output"], m.value()
        )
        for m in outputs
    }
    assert {k: v["status"] for k, v in announced.items()} == {
        nul_job: "failed",
        large: "failed",
        refused: "failed",
        **{job_id: "completed" for job_id in behind},
    }
    # The oversized output's work was paid: its cost event is kept although it failed.
    costs = consume_from(bootstrap, echo_pipeline.topics["costs"], 10, timeout=10)
    costed = {echo_pipeline.codec.decode(echo_pipeline.topics["costs"], m.value())["job_id"]
              for m in costs}  # fmt: skip
    assert {large, refused, *behind} <= costed


def test_a_garbage_message_never_shadows_a_later_job_with_its_key(
    echo_pipeline: EchoPipeline,
) -> None:
    [job_id] = new_job_ids(1)
    bootstrap, topic = echo_pipeline.settings.kafka_bootstrap, echo_pipeline.topics["input"]
    produce_to(bootstrap, topic, b"\x00not avro", key=job_id, partition=0)
    echo_pipeline.submit(job_id, partition=0)
    echo_pipeline.start_worker("w1")

    deadline = time.monotonic() + 90
    while len(runs := _runs_by_customer(echo_pipeline, job_id)) < 2:
        assert time.monotonic() < deadline, f"runs of {job_id}: {runs}"
        time.sleep(0.25)
    assert runs == {"": "dead_lettered", "cust-echo": "succeeded"}
    assert echo_pipeline.executions([job_id]) == {job_id: 1}


def _runs_by_customer(pipeline: EchoPipeline, run_key: str) -> dict[str, str]:
    """The echo stage's finished runs under ``run_key``, by customer ('' for none known)."""
    with pipeline.pool.connection() as conn:
        rows = conn.execute(
            "SELECT customer_id, status FROM stage_runs WHERE stage = 'echo' AND run_key = %s"
            " AND status IN ('succeeded', 'dead_lettered')",
            (run_key,),
        ).fetchall()
    return {row["customer_id"]: row["status"] for row in rows}
