"""The runtime's Prometheus metrics, one set per process, labelled by stage."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from vidinsight.errors import Reason

MESSAGES = Counter(
    "vidinsight_stage_messages_total",
    "Input messages finished by a stage, by outcome (processed, short_circuited,"
    " dead_lettered, cancelled).",
    ["stage", "outcome"],
)
RETRIES = Counter(
    "vidinsight_stage_retries_total",
    "Retries of a handler, a transaction or a produce, by reason code.",
    ["stage", "reason"],
)
DEAD_LETTERS = Counter(
    "vidinsight_stage_dead_letters_total",
    "Messages sent to the stage's dead-letter topic, by reason code.",
    ["stage", "reason"],
)
HANDLER_SECONDS = Histogram(
    "vidinsight_stage_handler_duration_seconds",
    "Time a handler took for one message.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
)
BATCH_SECONDS = Histogram(
    "vidinsight_stage_batch_duration_seconds",
    "Time from taking a message to its delivered outputs (stored and produced with its group),"
    " before the commit.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
IN_FLIGHT = Gauge(
    "vidinsight_stage_in_flight_messages",
    "Messages handed to worker threads and not yet committed.",
    ["stage"],
)
CONSUMER_LAG = Gauge(
    "vidinsight_consumer_lag_messages",
    "High watermark minus committed offset, per owned partition.",
    ["stage", "topic", "partition"],
)
LAST_COMMIT = Gauge(
    "vidinsight_stage_last_commit_timestamp_seconds",
    "Unix time of the stage's last successful offset commit.",
    ["stage"],
)
TIMEOUTS = Counter(
    "vidinsight_stage_timeouts_total",
    "Handler calls that ran past their deadline (each ends stage_timeout).",
    ["stage"],
)
HUNG = Counter(
    "vidinsight_stage_hung_handlers_total",
    "Handlers that did not give up within the grace after their deadline (the worker exits).",
    ["stage"],
)
STALLS = Counter(
    "vidinsight_stage_partition_stalls_total",
    "Owned partitions found with lag and no commit for longer than the stage's time budget.",
    ["stage"],
)
REBALANCES = Counter(
    "vidinsight_stage_partitions_rebalanced_total",
    "Partitions assigned to or revoked from this worker, by event (assigned, revoked, lost).",
    ["stage", "event"],
)

# Jobs, as opposed to messages: notify reads every job's end (completed from synthesise,
# failed from any stage's dead letter), so it counts jobs out once per end state.
JOBS_ENDED = Counter(
    "vidinsight_jobs_ended_total",
    "Jobs that reached an end state, counted by notify, by status (completed, failed, cancelled).",
    ["status"],
)
JOB_SECONDS = Histogram(
    "vidinsight_job_duration_seconds",
    "Time from a job's acceptance to its end state, by status.",
    ["status"],
    buckets=(5, 10, 20, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600, 7200),
)


JOB_END_STATUSES = ("completed", "failed", "cancelled")
# Jobs out start at zero, so the first end of each kind shows in rate() (see initialise).
for _status in JOB_END_STATUSES:
    JOBS_ENDED.labels(_status)
    JOB_SECONDS.labels(_status)


def count_job_end(status: str, job: Mapping[str, Any] | None) -> None:
    """Jobs out, and how long each took from acceptance to its end (the pipeline's latency)."""
    JOBS_ENDED.labels(status).inc()
    if job is not None and job.get("completed_at") and job.get("created_at"):
        elapsed = job["completed_at"] - job["created_at"]
        JOB_SECONDS.labels(status).observe(elapsed.total_seconds())


OUTCOMES = ("processed", "short_circuited", "dead_lettered", "cancelled")


def initialise(stage: str) -> None:
    """Export a stage's series at zero before its first message.

    A counter that appears at its first increment hides that increment from rate() and
    increase() (there is no earlier sample), so the first dead letter of a reason would
    never show on a dashboard or fire an alert. Every reason code is known in advance.
    """
    for outcome in OUTCOMES:
        MESSAGES.labels(stage, outcome)
    for reason in Reason:
        DEAD_LETTERS.labels(stage, reason.value)
        RETRIES.labels(stage, reason.value)
    HANDLER_SECONDS.labels(stage)
    BATCH_SECONDS.labels(stage)
    IN_FLIGHT.labels(stage)
    STALLS.labels(stage)
    TIMEOUTS.labels(stage)
    HUNG.labels(stage)


def forget_partition(stage: str, topic: str, partition: int) -> None:
    """Drop the lag of a partition this worker gave up: its new owner reports it now."""
    with suppress(KeyError):  # never measured here
        CONSUMER_LAG.remove(stage, topic, str(partition))
