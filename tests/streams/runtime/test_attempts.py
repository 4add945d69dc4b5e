"""Attempts are counted per message, when its handler starts: messages waiting behind a
long one are never charged for the rebalances that interrupt it, and a worker that lost
its partition starts no further handler for it."""

from __future__ import annotations

import time
from pathlib import Path

from tests.fixtures.workers import EchoPipeline, new_job_ids

HANDOVERS = 5
MESSAGES = 20
# Short graces, so each handover interrupts the first message instead of waiting for it.
QUICK_HANDOVER = {"VI_SHUTDOWN_GRACE_SECONDS": "1", "VI_REVOKE_GRACE_SECONDS": "1"}


def test_rebalances_during_the_first_message_charge_none_of_the_others(
    echo_pipeline: EchoPipeline, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.write_text("the first message runs while this file exists")
    first, *rest = new_job_ids(MESSAGES)
    echo_pipeline.submit(first, partition=0, hold_while_file=str(hold))
    for job_id in rest:
        echo_pipeline.submit(job_id, partition=0)

    owner = echo_pipeline.start_worker("w0", **QUICK_HANDOVER)
    _wait_executions(echo_pipeline, first, 1)
    former_owners = []
    for round_ in range(1, HANDOVERS + 1):
        successor = echo_pipeline.start_worker(f"w{round_}", **QUICK_HANDOVER)
        successor.wait_for_log("worker started")
        assert owner.terminate() == 0
        former_owners.append(owner.process.pid)
        owner = successor
        _wait_executions(echo_pipeline, first, round_ + 1)  # the new owner began it again
    hold.unlink()

    statuses = echo_pipeline.wait_finished([first, *rest])
    assert set(statuses.values()) == {"succeeded"}, "none is dead-lettered"
    runs = echo_pipeline.runs([first, *rest])
    assert {job_id: runs[job_id]["attempts"] for job_id in rest} == {job_id: 1 for job_id in rest}
    assert echo_pipeline.executions(rest) == {job_id: 1 for job_id in rest}
    # The interrupted attempts were the runtime's doing, not the message's: taken back.
    assert runs[first]["attempts"] == 1
    # A worker that lost the partition started no handler after the first message.
    with echo_pipeline.pool.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT job_id FROM echo_executions WHERE pid = ANY(%s) AND job_id = ANY(%s)",
            (former_owners, [first, *rest]),
        ).fetchall()
    assert {row["job_id"] for row in rows} == {first}


def _wait_executions(pipeline: EchoPipeline, job_id: str, count: int, timeout: float = 90) -> None:
    """Until the handler has been started ``count`` times for ``job_id``."""
    deadline = time.monotonic() + timeout
    while pipeline.executions([job_id]).get(job_id, 0) < count:
        for worker in pipeline.workers[-2:]:
            worker_alive = worker.process.poll() is None or worker.process.returncode == 0
            assert worker_alive, worker.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{job_id} not started {count} times in {timeout} s"
        time.sleep(0.2)
