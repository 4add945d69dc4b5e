"""A long transcript is analysed map-reduce over token-bounded windows: one call per
window and one to summarise them, and the merged analysis still covers the whole video
(chapters tile it, every window's action items and topics survive)."""

from __future__ import annotations

import itertools
import uuid

from inference.insight_schema import Insights
from inference.llm import LLMContext, LLMResult, Message, complete
from inference.prompts.transcript import Segment, TranscriptText
from inference.prompts.windows import estimated_tokens, split_windows
from sinks.db import Pool
from streams.analyse import TASK, analyse_transcript

PARTS = [
    ("Orion", "budget", "Maria will approve the Orion budget by Friday."),
    ("warehouse", "robots", "Kenji will test the warehouse robots next week."),
    ("marketing", "campaign", "Priya will draft the marketing campaign brief."),
]


def long_transcript() -> TranscriptText:
    """Three topics of eight sentences each, ten seconds a sentence, cuts between topics."""
    segments, start = [], 0.5
    for first, second, action in PARTS:
        lines = [f"The {first} {second} review covers the {first} {second} plan."] * 7
        for text in [*lines, action]:
            segments.append(Segment(start, start + 9.0, text))
            start += 10.0
    return TranscriptText(start + 5.0, [80.0, 160.0], segments)


def test_windows_are_token_bounded_whole_segments_covering_the_video() -> None:
    transcript = long_transcript()
    windows = split_windows(transcript, max_tokens=120)
    assert len(windows) >= 3
    assert [s for w in windows for s in w.transcript.segments] == transcript.segments
    assert (
        windows[0].start_seconds == 0.0 and windows[-1].end_seconds == transcript.duration_seconds
    )
    for window in windows:
        text = sum(estimated_tokens(s.text) + 4 for s in window.transcript.segments)
        assert text <= 120
    assert split_windows(transcript, max_tokens=100_000)[0].transcript == transcript


def test_a_long_transcript_is_analysed_window_by_window_and_merged(db_pool: Pool) -> None:
    transcript = long_transcript()
    context = LLMContext(f"cust-{uuid.uuid4().hex[:8]}", f"job-{uuid.uuid4()}", "analyse")
    windows = split_windows(transcript, max_tokens=120)

    def ask(messages: list[Message]) -> LLMResult[Insights]:
        return complete(TASK, messages, Insights, context, pool=db_pool)

    analysis = analyse_transcript(transcript, ask, window_tokens=120)
    insights, costs = analysis.insights, analysis.cost_events

    assert analysis.model == "local/extractive"
    assert analysis.prompt_version == "insights.v1+summaries.v1"
    assert len(costs) == len(windows) + 1  # every window, then the reduce call
    assert {c["job_id"] for c in costs} == {context.job_id}
    chapters = insights.chapters
    assert chapters[0].start_seconds == 0.0
    assert chapters[-1].end_seconds == transcript.duration_seconds
    for before, after in itertools.pairwise(chapters):
        assert before.end_seconds == after.start_seconds
    assert {item.owner for item in insights.action_items} == {"Maria", "Kenji", "Priya"}
    keywords = {k.lower() for k in insights.keywords}
    assert {"orion", "warehouse", "marketing"} <= keywords, keywords
    assert insights.summary

    # The response cache answers a redelivery: the same insights, and the same paid calls
    # under the same event ids (the ledger counts them once, the bill is unchanged).
    again = analyse_transcript(transcript, ask, window_tokens=120)
    assert again.insights == insights
    assert again.cost_events == costs
