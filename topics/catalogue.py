"""The topic catalogue: the one source of truth for every topic of the platform.

Names, partitions, retention, keys, value schemas and dead-letter topics are defined
here and nowhere else; ``topics.admin`` makes the cluster and the registry match it,
the stage runtime reads its wiring (``STAGES``) from it, and Kubernetes manifests are
rendered from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidinsight.settings import Settings, get_settings

DAY_MS = 24 * 60 * 60 * 1000

JOBS_REQUESTED_TOPIC = "vi.jobs.requested"
MEDIA_INGESTED_TOPIC = "vi.media.ingested"
AUDIO_CHUNKS_TOPIC = "vi.audio.chunks"
TRANSCRIPTS_READY_TOPIC = "vi.transcripts.ready"
ANALYSIS_DONE_TOPIC = "vi.analysis.done"
JOBS_COMPLETED_TOPIC = "vi.jobs.completed"
COSTS_TOPIC = "vi.costs"
BUDGETS_TOPIC = "vi.budgets"

# Pipeline messages are kept a week: long enough to replay after a weekend outage.
PIPELINE_RETENTION_MS = 7 * DAY_MS
# Completed jobs, costs and dead letters are read by people and other systems: a month.
RECORD_RETENTION_MS = 30 * DAY_MS


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """What one topic must look like on the cluster and in the registry."""

    name: str
    partitions: int
    replication_factor: int
    value_schema: str
    key: str = "job_id"
    retention_ms: int = PIPELINE_RETENTION_MS
    cleanup_policy: str = "delete"
    # With replication >= 3, acks=all should mean "on two brokers"; None leaves the default.
    min_insync_replicas: int | None = None
    # Further topic configs, as (name, value) pairs; they win over the fields above.
    config_overrides: tuple[tuple[str, str], ...] = ()

    @property
    def value_subject(self) -> str:
        """The registry subject of this topic's values (TopicNameStrategy)."""
        return f"{self.name}-value"

    def configs(self) -> dict[str, str]:
        """The topic configs the cluster must hold, as Kafka names them."""
        wanted = {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}
        if self.min_insync_replicas is not None:
            wanted["min.insync.replicas"] = str(self.min_insync_replicas)
        wanted.update(self.config_overrides)
        return wanted


def dlq_topic(stage: str) -> str:
    """The dead-letter topic of a stage, ``vi.<stage>.dlq``; ValueError for an unknown stage."""
    if stage not in STAGE_NAMES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_NAMES)}")
    return f"vi.{stage}.dlq"


@dataclass(frozen=True)
class StageTopics:
    """How one stage is wired: what it reads, what it writes, where its failures go."""

    input_topic: str
    input_schema: str
    output_topics: tuple[str, ...]
    dlq_topic: str


# preprocess (audio) and scenes are two branches on the same input, each its own
# consumer group; analyse starts when both have recorded every segment (the join in
# PostgreSQL, sinks/join.py), announced by whichever records the last part.
STAGE_NAMES = ("ingest", "preprocess", "scenes", "transcribe", "analyse", "synthesise", "notify")

STAGES: dict[str, StageTopics] = {
    "ingest": StageTopics(
        JOBS_REQUESTED_TOPIC, "JobRequested", (MEDIA_INGESTED_TOPIC,), dlq_topic("ingest")
    ),
    "preprocess": StageTopics(
        MEDIA_INGESTED_TOPIC,
        "MediaIngested",
        (AUDIO_CHUNKS_TOPIC, TRANSCRIPTS_READY_TOPIC),
        dlq_topic("preprocess"),
    ),
    "scenes": StageTopics(
        MEDIA_INGESTED_TOPIC, "MediaIngested", (TRANSCRIPTS_READY_TOPIC,), dlq_topic("scenes")
    ),
    "transcribe": StageTopics(
        AUDIO_CHUNKS_TOPIC, "AudioChunk", (TRANSCRIPTS_READY_TOPIC,), dlq_topic("transcribe")
    ),
    "analyse": StageTopics(
        TRANSCRIPTS_READY_TOPIC, "TranscriptReady", (ANALYSIS_DONE_TOPIC,), dlq_topic("analyse")
    ),
    "synthesise": StageTopics(
        ANALYSIS_DONE_TOPIC, "AnalysisDone", (JOBS_COMPLETED_TOPIC,), dlq_topic("synthesise")
    ),
    # notify calls webhooks; it writes no topic (its costs go to COSTS_TOPIC like everyone's).
    "notify": StageTopics(JOBS_COMPLETED_TOPIC, "JobCompleted", (), dlq_topic("notify")),
}


def catalogue(settings: Settings | None = None) -> tuple[TopicSpec, ...]:
    """Every topic of the platform, sized from ``settings`` (the process settings by default)."""
    settings = settings or get_settings()
    partitions = settings.topic_partitions
    replication = settings.topic_replication_factor
    min_isr = 2 if replication >= 3 else None

    def topic(
        name: str,
        schema: str,
        *,
        key: str = "job_id",
        retention_ms: int = PIPELINE_RETENTION_MS,
        partition_count: int = partitions,
    ) -> TopicSpec:
        return TopicSpec(
            name=name,
            partitions=partition_count,
            replication_factor=replication,
            value_schema=schema,
            key=key,
            retention_ms=retention_ms,
            min_insync_replicas=min_isr,
        )

    pipeline = (
        topic(JOBS_REQUESTED_TOPIC, "JobRequested"),
        # One message per segment of a long video, so the segments spread over partitions.
        topic(MEDIA_INGESTED_TOPIC, "MediaIngested", key="job_id:segment"),
        # Transcription fans out per chunk: twice the partitions, so twice the consumers.
        topic(
            AUDIO_CHUNKS_TOPIC,
            "AudioChunk",
            partition_count=2 * partitions,
            key="job_id:segment:chunk",
        ),
        topic(TRANSCRIPTS_READY_TOPIC, "TranscriptReady"),
        topic(ANALYSIS_DONE_TOPIC, "AnalysisDone"),
        topic(JOBS_COMPLETED_TOPIC, "JobCompleted", retention_ms=RECORD_RETENTION_MS),
        topic(COSTS_TOPIC, "CostEvent", key="customer_id", retention_ms=RECORD_RETENTION_MS),
        # Budget thresholds crossed, from the cost aggregator to whoever must stop work.
        topic(BUDGETS_TOPIC, "BudgetEvent", key="customer_id", retention_ms=RECORD_RETENTION_MS),
    )
    dead_letters = tuple(
        topic(dlq_topic(stage), "DeadLetter", key="original key", retention_ms=RECORD_RETENTION_MS)
        for stage in STAGE_NAMES
    )
    return pipeline + dead_letters


def spec_for(name: str, settings: Settings | None = None) -> TopicSpec:
    """The catalogue entry of topic ``name``; KeyError if the catalogue has none."""
    for spec in catalogue(settings):
        if spec.name == name:
            return spec
    raise KeyError(f"topic {name!r} is not in the catalogue")
