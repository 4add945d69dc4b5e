"""analyse and synthesise as real worker processes on private topics, with the offline
default (``local/extractive``): a stored transcript with a known script (names, topics,
action items) becomes a completed job with an insight document and valid captions;
a customer whose budget is spent has the job failed with ``budget_exceeded``.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.routes.results import Insights as GatewayInsights
from schemas.codec import Codec
from sinks.customers import create_customer
from sinks.db import Pool, transaction
from sinks.insights import get_analysis, get_insight
from sinks.jobs import create_job, get_job, mark_published, set_status
from sinks.scenes import save_scenes
from sinks.stage_runs import runs_for_job
from sinks.transcripts import record_chunk
from streams.analyse import build as build_analyse
from streams.runtime.dead_letter import header_map
from streams.runtime.stage import Stage
from streams.synthesise import build as build_synthesise
from tests.fixtures.costs import spend
from tests.fixtures.kafka import TopicFactory, consume_from, produce_to
from tests.fixtures.openai_server import OpenAIServer, ScriptedReply
from tests.fixtures.workers import WorkerProcess, start_stage
from tests.media.test_captions import assert_within_limits, parse_srt, parse_vtt, words_of
from vidinsight.settings import Settings

TOPICS_ENV = "ANALYSE_TEST_TOPICS"
GROUP_ENV = "ANALYSE_TEST_GROUP"
# The video's length varies by run: the rendered prompt differs, so the response cache
# (shared by every run on the stack) cannot answer it and the call is costed.
DURATION = 60.0 + uuid.uuid4().int % 1000 / 100
# Two scenes of thirty seconds with two topics: the Atlas launch, then hiring.
SCRIPT = [
    [
        (0.5, 5.0, "Welcome to the Atlas launch review."),
        (5.5, 11.0, "The Atlas launch depends on the supplier contracts and the launch budget."),
        (11.5, 17.0, "Maria will send the revised launch budget to finance by Friday."),
        (17.5, 23.0, "The supplier contracts for the Atlas launch are almost signed."),
        (23.5, 29.0, "Kenji, please call the supplier about the Atlas contracts."),
    ],
    [
        (30.5, 36.0, "Next is the hiring plan for the data team."),
        (36.5, 42.0, "The data team needs two engineers for the analytics platform."),
        (42.5, 48.0, "Priya will interview the analytics candidates before March."),
        (48.5, 55.0, "Hiring engineers for the data team is the priority this quarter."),
    ],
]
OWNERS = {"Maria", "Kenji", "Priya"}


def analyse_from_env() -> Stage:
    """analyse on the test's private topics."""
    topics = json.loads(os.environ[TOPICS_ENV])
    return build_analyse(topics["analyse"], group_id=f"{os.environ[GROUP_ENV]}.analyse")


def synthesise_from_env() -> Stage:
    """synthesise on the test's private topics."""
    topics = json.loads(os.environ[TOPICS_ENV])
    return build_synthesise(topics["synthesise"], group_id=f"{os.environ[GROUP_ENV]}.synthesise")


@dataclass
class AnalysisPipeline:
    """Private topics for analyse -> synthesise, their workers, and the stored job."""

    settings: Settings
    codec: Codec
    pool: Pool
    log_dir: Path
    topics: dict[str, str]
    group: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def stage_topics(self) -> dict[str, dict[str, str]]:
        t = self.topics
        common = {"dlq": t["dlq"], "costs": t["costs"], "failures": t["completed"]}
        return {
            "analyse": {"input": t["ready"], "output": t["done"], **common},
            "synthesise": {"input": t["done"], "output": t["completed"], **common},
        }

    def start(self, stage: str, **extra: str) -> None:
        env = {
            **os.environ,
            TOPICS_ENV: json.dumps(self.stage_topics()),
            GROUP_ENV: self.group,
            "VI_STALL_CHECK_INTERVAL_SECONDS": "1",
            **extra,
        }
        log_path = self.log_dir / f"{stage}.log"
        ref = f"tests.streams.test_analyse:{stage}_from_env"
        self.workers.append(start_stage(stage, ref, env, log_path))

    def store_transcript(self, job_id: str, customer_id: str) -> None:
        """The job as ingest, preprocess and transcribe would have left it in PostgreSQL."""
        with transaction(self.pool) as conn:
            create_job(conn, job_id=job_id, customer_id=customer_id, source_uri="file:///x.mp4")
            mark_published(conn, job_id)  # already past ingest: no outbox relay may send it
            set_status(conn, job_id, "running")
            for index, sentences in enumerate(SCRIPT):
                start = index * 30.0
                end = DURATION if index == len(SCRIPT) - 1 else start + 30.0
                record_chunk(
                    conn,
                    job_id=job_id,
                    segment_index=0,
                    chunk_index=index,
                    chunk_count=len(SCRIPT),
                    start_seconds=start,
                    end_seconds=end,
                    text=" ".join(text for _, _, text in sentences),
                    segments=[
                        {"start": s, "end": e, "text": t, "words": []} for s, e, t in sentences
                    ],
                    language="en",
                )
            save_scenes(
                conn,
                job_id,
                [
                    {
                        "start_seconds": 0.0,
                        "end_seconds": 30.0,
                        "keyframe_uri": f"blob://{job_id}/0",
                    },
                    {"start_seconds": 30.0, "end_seconds": DURATION, "keyframe_uri": None},
                ],
            )

    def announce(self, job_id: str, customer_id: str) -> None:
        """The TranscriptReady transcribe emits when the job's last chunk lands."""
        words = sum(len(text.split()) for _, _, text in itertools.chain(*SCRIPT))
        value = {
            "job_id": job_id,
            "customer_id": customer_id,
            "chunk_count": len(SCRIPT),
            "language": "en",
            "word_count": words,
            "duration_seconds": DURATION,
            "ready_at_ms": int(time.time() * 1000),
        }
        topic = self.topics["ready"]
        body = self.codec.encode(topic, "TranscriptReady", value)
        produce_to(self.settings.kafka_bootstrap, topic, body, key=job_id)

    def wait_job(self, job_id: str, status: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with transaction(self.pool) as conn:
                job = get_job(conn, job_id)
            if job is not None and job["status"] == status:
                return job
            assert job is None or job["status"] in {"queued", "running"}, job
            for worker in self.workers:
                assert worker.process.poll() is None, worker.log_path.read_text()[-3000:]
            time.sleep(0.3)
        logs = "\n".join(w.log_path.read_text()[-2000:] for w in self.workers)
        raise AssertionError(f"job {job_id} not {status} in {timeout} s: {job}\n{logs}")

    def messages(self, topic: str, job_id: str, n: int = 1) -> list[dict[str, Any]]:
        name = self.topics[topic]
        found = consume_from(self.settings.kafka_bootstrap, name, n, timeout=15)
        values = [self.codec.decode(name, m.value()) for m in found]
        return [v for v in values if v["job_id"] == job_id]


def new_analysis_pipeline(
    settings: Settings, codec: Codec, db_pool: Pool, topic_factory: TopicFactory, tmp_path: Path
) -> AnalysisPipeline:
    """Fresh private topics and a fresh consumer group for analyse and synthesise."""
    return AnalysisPipeline(
        settings=settings,
        codec=codec,
        pool=db_pool,
        log_dir=tmp_path,
        topics={
            "ready": topic_factory("analyse-ready", value_schema="TranscriptReady"),
            "done": topic_factory("analyse-done", value_schema="AnalysisDone"),
            "completed": topic_factory("analyse-completed", value_schema="JobCompleted"),
            "dlq": topic_factory("analyse-dlq", value_schema="DeadLetter"),
            "costs": topic_factory("analyse-costs", value_schema="CostEvent"),
        },
        group=f"test.analyse.{uuid.uuid4().hex[:8]}",
    )


def test_a_transcript_becomes_a_completed_job_with_insights_and_captions(
    analysis_pipeline: AnalysisPipeline,
) -> None:
    pipeline = analysis_pipeline
    job_id, customer_id = f"job-{uuid.uuid4()}", f"cust-{uuid.uuid4().hex[:8]}"
    pipeline.store_transcript(job_id, customer_id)
    pipeline.start("analyse")
    pipeline.start("synthesise")
    pipeline.announce(job_id, customer_id)

    pipeline.wait_job(job_id, "completed")
    [done] = pipeline.messages("done", job_id)
    assert (done["model"], done["prompt_version"]) == ("local/extractive", "insights.v1")
    [completed] = pipeline.messages("completed", job_id)
    assert completed["status"] == "completed"
    assert completed["insights_uri"] == f"/v1/jobs/{job_id}/insights"
    costs = {c["stage"]: c for c in pipeline.messages("costs", job_id, n=2)}
    assert {stage: (c["model"], c["unit"]) for stage, c in costs.items()} == {
        "analyse": ("extractive", "tokens"),
        "synthesise": ("synthesis", "media_seconds"),
    }
    analysed = costs["analyse"]
    assert analysed["input_tokens"] > 0 and analysed["output_tokens"] > 0
    assert analysed["quantity"] == analysed["input_tokens"] + analysed["output_tokens"]
    assert costs["synthesise"]["quantity"] == round(DURATION, 3)  # the video it covers
    assert {c["customer_id"] for c in costs.values()} == {customer_id}

    with transaction(pipeline.pool) as conn:
        analysis = get_analysis(conn, job_id)
        row = get_insight(conn, job_id, customer_id)
    assert analysis is not None and row is not None and row["schema_version"] == "1.0"
    document = row["document"]
    _assert_document(document, job_id)
    assert_captions_match(row["captions_vtt"], row["captions_srt"], document["transcript"])


def _assert_document(document: dict[str, Any], job_id: str) -> None:
    assert document["schema_version"] == "1.0"
    spoken = " ".join(text for _, _, text in itertools.chain(*SCRIPT))
    assert document["transcript"]["text"] == spoken
    assert [s["start"] for s in document["transcript"]["segments"]][:2] == [0.5, 5.5]
    assert document["scenes"] == [
        {
            "index": 0,
            "start": 0.0,
            "end": 30.0,
            "keyframe_url": f"/v1/jobs/{job_id}/keyframes/0.jpg",
        },
        {"index": 1, "start": 30.0, "end": DURATION, "keyframe_url": None},
    ]
    assert "Atlas" in document["summary"] and "data team" in document["summary"]
    keywords = {k.lower() for k in document["keywords"]}
    assert {"atlas", "launch", "supplier", "team"} <= keywords, keywords
    items = document["action_items"]
    assert {item["owner"] for item in items} == OWNERS
    assert all(item["owner"] and item["task"] for item in items)
    chapters = document["chapters"]
    assert chapters[0]["start_seconds"] == 0.0 and chapters[-1]["end_seconds"] == DURATION
    for before, after in itertools.pairwise(chapters):
        assert before["end_seconds"] == after["start_seconds"]  # ordered, no gap, no overlap
    assert all(c["start_seconds"] < c["end_seconds"] for c in chapters)
    assert document["sentiment"]["label"] in {"positive", "neutral", "negative"}
    served = GatewayInsights.model_validate(document)  # what GET .../insights answers with
    assert served.transcript.segments and served.scenes[0].keyframe_url


def assert_captions_match(vtt: str, srt: str, transcript: dict[str, Any]) -> None:
    """Both caption files valid, within limits, timed alike, saying the transcript's words."""
    vtt_cues, srt_cues = parse_vtt(vtt), parse_srt(srt)
    assert_within_limits(vtt_cues)
    assert [(s, e) for s, e, _ in vtt_cues] == [(s, e) for s, e, _ in srt_cues]
    said = words_of([html.unescape(" ".join(lines)) for _, _, lines in vtt_cues])
    assert said == words_of([transcript["text"]])


def test_a_customer_over_budget_has_the_job_failed_with_budget_exceeded(
    analysis_pipeline: AnalysisPipeline,
) -> None:
    pipeline = analysis_pipeline
    job_id = f"job-{uuid.uuid4()}"
    with transaction(pipeline.pool) as conn:
        customer_id, _ = create_customer(conn, "spent", monthly_budget_usd_micros=1_000)
        spend(conn, customer_id, 1_500)  # a previous job used up this month's budget
    pipeline.store_transcript(job_id, customer_id)
    pipeline.start("analyse")
    pipeline.announce(job_id, customer_id)

    job = pipeline.wait_job(job_id, "failed")
    assert (job["error_reason"], job["error_stage"]) == ("budget_exceeded", "analyse")
    [failed] = pipeline.messages("completed", job_id)
    assert (failed["status"], failed["reason"]) == ("failed", "budget_exceeded")
    with transaction(pipeline.pool) as conn:
        assert get_analysis(conn, job_id) is None


def test_a_job_cancelled_before_its_analysis_stops_there_and_is_announced_cancelled_once(
    analysis_pipeline: AnalysisPipeline,
) -> None:
    pipeline = analysis_pipeline
    job_id, customer_id = f"job-{uuid.uuid4()}", f"cust-{uuid.uuid4().hex[:8]}"
    pipeline.store_transcript(job_id, customer_id)
    with transaction(pipeline.pool) as conn:
        set_status(conn, job_id, "cancelled")
    pipeline.start("analyse")
    pipeline.start("synthesise")
    pipeline.announce(job_id, customer_id)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _run_status(pipeline.pool, job_id) != "cancelled":
        time.sleep(0.3)
    assert _run_status(pipeline.pool, job_id) == "cancelled"
    with transaction(pipeline.pool) as conn:
        job = get_job(conn, job_id)
        assert get_analysis(conn, job_id) is None
        assert get_insight(conn, job_id) is None
    assert job is not None and job["status"] == "cancelled"
    ended = pipeline.messages("completed", job_id, n=5)
    assert [(e["status"], e["reason"]) for e in ended] == [("cancelled", "job_cancelled")]
    assert pipeline.messages("costs", job_id, n=5) == [], "nothing paid after the cancel"


def _run_status(pool: Pool, job_id: str) -> str | None:
    """How the job's analyse run ended, if it has."""
    with transaction(pool) as conn:
        runs = [run for run in runs_for_job(conn, job_id) if run["stage"] == "analyse"]
    return runs[0]["status"] if runs else None


def test_an_llm_that_keeps_answering_invalid_json_is_retried_then_dead_lettered(
    analysis_pipeline: AnalysisPipeline, openai_server: OpenAIServer
) -> None:
    """A hosted model (the local OpenAI-protocol server) that never returns valid JSON."""
    pipeline = analysis_pipeline
    model = "openai/gpt-4o-mini"
    openai_server.always(ScriptedReply(content="this is not JSON at all"))
    job_id = f"job-{uuid.uuid4()}"
    customer_id = f"cus-{uuid.uuid4().hex[:8]}"
    pipeline.store_transcript(job_id, customer_id)
    pipeline.start(
        "analyse",
        VI_LLM_MODELS=json.dumps({"default": [model]}),
        VI_LLM_API_BASES=json.dumps({model: openai_server.url}),
        VI_LLM_API_KEY_ENVS=json.dumps({model: "VI_TEST_LLM_API_KEY"}),
        VI_TEST_LLM_API_KEY="sk-test-not-a-real-key",
        VI_LLM_INVALID_OUTPUT_RETRIES="1",
        VI_LLM_RETRY_BACKOFF_INITIAL_SECONDS="0.01",
    )
    pipeline.announce(job_id, customer_id)

    job = pipeline.wait_job(job_id, "failed")
    assert (job["error_reason"], job["error_stage"]) == ("invalid_llm_output", "analyse")
    assert len(openai_server.requests) == 2, "asked once, retried once, then given up"
    name = pipeline.topics["dlq"]
    letters = [
        m
        for m in consume_from(pipeline.settings.kafka_bootstrap, name, 5, timeout=5)
        if (m.key() or b"").decode() == job_id
    ]
    assert len(letters) == 1
    assert header_map(letters[0].headers())["vi-reason"] == "invalid_llm_output"
    # Both calls were paid for, so both are costed, though the job failed.
    paid = pipeline.messages("costs", job_id, n=2)
    assert len({c["event_id"] for c in paid}) == 2, paid
    assert {(c["stage"], c["provider"], c["model"]) for c in paid} == {
        ("analyse", "openai", "gpt-4o-mini")
    }
    assert all(c["amount_usd_micros"] > 0 for c in paid)
