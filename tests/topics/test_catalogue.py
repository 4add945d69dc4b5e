"""The catalogue holds every topic of the design, wired into a pipeline without gaps."""

from __future__ import annotations

import pytest

from schemas.codec import SCHEMA_NAMES
from topics.catalogue import (
    AUDIO_CHUNKS_TOPIC,
    COSTS_TOPIC,
    STAGES,
    catalogue,
    dlq_topic,
    spec_for,
)

# The topic table of DESIGN.md: topic -> (key, value schema).
DESIGN_TOPICS = {
    "vi.jobs.requested": ("job_id", "JobRequested"),
    "vi.media.ingested": ("job_id:segment", "MediaIngested"),
    "vi.audio.chunks": ("job_id:segment:chunk", "AudioChunk"),
    "vi.transcripts.ready": ("job_id", "TranscriptReady"),
    "vi.analysis.done": ("job_id", "AnalysisDone"),
    "vi.jobs.completed": ("job_id", "JobCompleted"),
    "vi.costs": ("customer_id", "CostEvent"),
}
# Every stage of the design; preprocess (audio) and scenes are two branches on one topic.
DESIGN_STAGES = ("ingest", "preprocess", "scenes", "transcribe", "analyse", "synthesise", "notify")


def test_every_topic_of_the_design_is_in_the_catalogue_with_its_key_and_schema() -> None:
    specs = {spec.name: spec for spec in catalogue()}
    for name, (key, schema) in DESIGN_TOPICS.items():
        assert (specs[name].key, specs[name].value_schema) == (key, schema), name
    assert COSTS_TOPIC == "vi.costs"


def test_every_stage_has_a_long_lived_dead_letter_topic() -> None:
    for stage in DESIGN_STAGES:
        spec = spec_for(dlq_topic(stage))
        assert spec.name == f"vi.{stage}.dlq" == STAGES[stage].dlq_topic
        assert spec.value_schema == "DeadLetter"
        assert spec.retention_ms >= 30 * 24 * 3600 * 1000


def test_a_misspelt_stage_has_no_dead_letter_topic() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        dlq_topic("analyze")


def test_stages_form_one_chain_from_request_to_completion() -> None:
    inputs = {topics.input_topic for topics in STAGES.values()}
    for stage, topics in STAGES.items():
        assert spec_for(topics.input_topic).value_schema == topics.input_schema, stage
        for output in topics.output_topics:
            assert output in inputs, f"{stage} writes {output}, which no stage reads"
    assert STAGES["ingest"].input_topic == "vi.jobs.requested"


def test_names_are_unique_and_every_value_schema_exists() -> None:
    specs = catalogue()
    assert len({spec.name for spec in specs}) == len(specs)
    assert {spec.value_schema for spec in specs} <= set(SCHEMA_NAMES)


def test_audio_chunks_get_more_partitions_for_the_transcription_fan_out() -> None:
    specs = {spec.name: spec for spec in catalogue()}
    others = max(s.partitions for s in specs.values() if s.name != AUDIO_CHUNKS_TOPIC)
    assert specs[AUDIO_CHUNKS_TOPIC].partitions > others
