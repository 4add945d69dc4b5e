"""Analyse: a stored transcript becomes a stored analysis (TranscriptReady -> AnalysisDone).

The transcript and the scene cuts are read from PostgreSQL (claim check: the message
only says they are ready), rendered with their timestamps, and analysed into the
insight schema by whichever model the configuration names for the task "insights",
window by window when the transcript is long. The customer's budget is checked
before any model is called: a customer over budget is refused with
``budget_exceeded``, which dead-letters the message and fails the job with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from inference.insight_schema import Insights
from inference.llm import LLMContext, LLMResult, Message, complete
from inference.prompts.transcript import Segment, TranscriptText
from inference.prompts.windows import (
    REDUCE_PROMPT,
    merge,
    prompt_version,
    reduce_messages,
    split_windows,
    window_messages,
)
from sinks.budgets import is_over_budget
from sinks.db import Connection
from sinks.insights import save_analysis
from sinks.scenes import job_scenes
from sinks.transcripts import job_chunks
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound, Output, Stage, StageResult, on_topics
from vidinsight.errors import attach_costs

log = logging.getLogger("vidinsight.analyse")

TASK = "insights"


def stored_transcript(conn: Connection, job_id: str, duration_seconds: float) -> TranscriptText:
    """The job's transcript segments on the video timeline, and its scene cuts."""
    segments = [
        Segment(float(s["start"]), float(s["end"]), str(s["text"]))
        for chunk in job_chunks(conn, job_id)
        for s in chunk["segments"]
        if str(s["text"]).strip()
    ]
    cuts = [float(scene["start_seconds"]) for scene in job_scenes(conn, job_id)[1:]]
    return TranscriptText(duration_seconds, cuts, segments)


@dataclass(frozen=True)
class Analysis:
    """What analysing one transcript gave, and what it cost."""

    insights: Insights
    model: str  # the models that answered, in order of first use, joined by "+"
    prompt_version: str
    cost_events: list[Mapping[str, Any]]


Ask = Callable[[list[Message]], LLMResult[Insights]]


def analyse_transcript(transcript: TranscriptText, ask: Ask, window_tokens: int) -> Analysis:
    """The transcript's insights: one call per window of at most ``window_tokens``, and
    one more to summarise the windows' summaries when there are several."""
    windows = split_windows(transcript, window_tokens)
    answers: list[LLMResult[Insights]] = []
    try:
        for part, window in enumerate(windows, start=1):
            answers.append(ask(window_messages(window, part, len(windows))))
        analyses = [answer.value for answer in answers]
        if len(windows) == 1:
            return _analysis(analyses[0], answers, prompt_version())
        overall = ask(reduce_messages(windows, analyses))
    except Exception as exc:
        attach_costs(exc, [event for answer in answers for event in answer.cost_events])
        raise
    versions = f"{prompt_version()}+{prompt_version(REDUCE_PROMPT)}"
    return _analysis(merge(windows, analyses, overall.value), [*answers, overall], versions)


def _analysis(insights: Insights, answers: list[LLMResult[Insights]], versions: str) -> Analysis:
    models = "+".join(dict.fromkeys(answer.model for answer in answers))
    costs = [event for answer in answers for event in answer.cost_events]
    return Analysis(insights, models, versions, list(costs))


def asker(ctx: HandlerContext) -> Ask:
    """One budget-checked, cached, costed model call for the insight schema; each call
    first makes sure the job was not cancelled meanwhile (windows are paid one by one)."""
    context = LLMContext(str(ctx.inbound.customer_id), ctx.inbound.job_id, "analyse")

    def over_budget(customer_id: str) -> bool:
        with ctx.transaction() as conn:
            return is_over_budget(conn, customer_id, datetime.now(UTC))

    def ask(messages: list[Message]) -> LLMResult[Insights]:
        ctx.ensure_not_cancelled("a model call")
        return complete(
            TASK,
            messages,
            Insights,
            context,
            pool=ctx.pool,
            over_budget=over_budget,
            settings=ctx.settings,
        )

    return ask


def analyse(inbound: Inbound, ctx: HandlerContext, done_topic: str) -> StageResult:
    """Analyse the job's transcript and announce the stored analysis."""
    ready = inbound.value
    with ctx.transaction() as conn:
        transcript = stored_transcript(conn, inbound.job_id, float(ready["duration_seconds"]))
    window_tokens = ctx.settings.analyse_window_tokens
    analysis = analyse_transcript(transcript, asker(ctx), window_tokens)
    log.info(
        "transcript analysed",
        extra={
            "detail": {
                "model": analysis.model,
                "chapters": len(analysis.insights.chapters),
                "action_items": len(analysis.insights.action_items),
            }
        },
    )
    done = {
        "job_id": inbound.job_id,
        "customer_id": inbound.customer_id,
        "model": analysis.model,
        "prompt_version": analysis.prompt_version,
        "done_at_ms": int(time.time() * 1000),
    }
    return StageResult(
        outputs=[Output(done_topic, "AnalysisDone", inbound.job_id, done)],
        cost_events=analysis.cost_events,
        payload=analysis,
    )


def store(conn: Connection, inbound: Inbound, result: StageResult) -> None:
    """The analysis is stored in the same transaction that marks the run done."""
    analysis: Analysis = result.payload
    document = analysis.insights.model_dump(mode="json")
    save_analysis(conn, inbound.job_id, document, analysis.model, analysis.prompt_version)


def build(topics: Mapping[str, str] | None = None, group_id: str | None = None) -> Stage:
    """The analyse stage on the catalogue's topics, or on private ones (``on_topics``)."""
    return on_topics(
        "analyse", topics, group_id, lambda t: partial(analyse, done_topic=t["output"]), store=store
    )


STAGE = build()
