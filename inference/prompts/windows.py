"""Map-reduce over a long transcript: token-bounded windows, their prompts, and the merge.

A two-hour talk is far longer than some models' context, and one enormous call is
also one enormous retry. So a transcript is cut, at segment boundaries, into windows
of at most a configured number of tokens; each window is analysed on its own (map),
and the windows' analyses are merged (reduce): chapters, moments, action items and
questions keep their times on the video timeline, keywords and entities are ranked
across windows, and the overall summary is asked of the model once more, from the
windows' summaries. A transcript that fits one window makes exactly one call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from inference.insight_schema import Chapter, Insights, Sentiment, SentimentLabel
from inference.prompts import load_prompt
from inference.prompts.transcript import Segment, TranscriptText, render_transcript

INSIGHTS_PROMPT = ("insights", 1)
REDUCE_PROMPT = ("summaries", 1)
# A rough, provider-independent token count: English averages about four characters
# a token in the common BPE vocabularies; windows leave headroom for that error.
CHARS_PER_TOKEN = 4
_KEYWORDS = 10
_SENTIMENT_THRESHOLD = 0.2

Message = dict[str, str]


@dataclass(frozen=True)
class Window:
    """A stretch of the transcript analysed in one call, with its place on the timeline."""

    start_seconds: float
    end_seconds: float
    transcript: TranscriptText


def prompt_version(prompt: tuple[str, int] = INSIGHTS_PROMPT) -> str:
    """The version label stored with an analysis, e.g. ``insights.v1``."""
    name, version = prompt
    return f"{name}.v{version}"


def estimated_tokens(text: str) -> int:
    """Tokens ``text`` is likely to take, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def split_windows(transcript: TranscriptText, max_tokens: int) -> list[Window]:
    """Consecutive windows of whole segments, each within ``max_tokens`` (a lone longer
    segment makes a window of its own), together covering 0 to the video's end."""
    groups: list[list[Segment]] = [[]]
    used = 0
    for segment in transcript.segments:
        cost = estimated_tokens(segment.text) + 4  # the timestamps of its line
        if groups[-1] and used + cost > max_tokens:
            groups.append([])
            used = 0
        groups[-1].append(segment)
        used += cost
    starts = [0.0] + [group[0].start_seconds for group in groups[1:]]
    ends = [*starts[1:], transcript.duration_seconds]
    return [
        Window(start, end, _window_transcript(transcript, group, start, end))
        for start, end, group in zip(starts, ends, groups, strict=True)
    ]


def _window_transcript(
    transcript: TranscriptText, segments: list[Segment], start: float, end: float
) -> TranscriptText:
    cuts = [cut for cut in transcript.scene_cuts_seconds if start < cut < end]
    return TranscriptText(end, cuts, segments)


def window_messages(window: Window, part: int, parts: int) -> list[Message]:
    """The map prompt: instructions, the window's transcript, then the ask.

    The stable part (instructions and transcript) comes first so providers that cache
    prompt prefixes charge for it once across retries.
    """
    ask = load_prompt("ask-whole", 1)
    if parts > 1:
        ask = load_prompt("ask-window", 1).format(
            part=part, parts=parts, start=window.start_seconds, end=window.end_seconds
        )
    return [
        {"role": "system", "content": load_prompt(*INSIGHTS_PROMPT)},
        {"role": "user", "content": render_transcript(window.transcript)},
        {"role": "user", "content": ask},
    ]


def reduce_messages(windows: Sequence[Window], analyses: Sequence[Insights]) -> list[Message]:
    """The reduce prompt: the windows' summaries, each timed as its window, to summarise."""
    summaries = TranscriptText(
        windows[-1].end_seconds,
        [],
        [
            Segment(window.start_seconds, window.end_seconds, analysis.summary)
            for window, analysis in zip(windows, analyses, strict=True)
        ],
    )
    return [
        {"role": "system", "content": load_prompt(*REDUCE_PROMPT)},
        {"role": "user", "content": render_transcript(summaries)},
        {"role": "user", "content": load_prompt("ask-summaries", 1)},
    ]


def merge(windows: Sequence[Window], analyses: Sequence[Insights], overall: Insights) -> Insights:
    """One analysis of the whole video from its windows' analyses and the reduced summary."""
    return Insights(
        summary=overall.summary,
        chapters=[
            chapter
            for window, analysis in zip(windows, analyses, strict=True)
            for chapter in _chapters_within(window, analysis.chapters)
        ],
        topics=_ranked(overall.topics, *(a.topics for a in analyses)),
        keywords=_ranked(*(a.keywords for a in analyses))[:_KEYWORDS],
        key_moments=[moment for a in analyses for moment in a.key_moments],
        sentiment=_weighted_sentiment(windows, analyses),
        entities=_ranked(*(a.entities for a in analyses)),
        action_items=[item for a in analyses for item in a.action_items],
        questions=[question for a in analyses for question in a.questions],
    )


def _chapters_within(window: Window, chapters: Sequence[Chapter]) -> list[Chapter]:
    """A window's chapters clipped to it and stretched to its edges: windows tile the video."""
    inside = [
        chapter.model_copy(
            update={
                "start_seconds": max(chapter.start_seconds, window.start_seconds),
                "end_seconds": min(chapter.end_seconds, window.end_seconds),
            }
        )
        for chapter in sorted(chapters, key=lambda c: c.start_seconds)
        if chapter.end_seconds > window.start_seconds and chapter.start_seconds < window.end_seconds
    ]
    if not inside:
        return []
    inside[0] = inside[0].model_copy(update={"start_seconds": window.start_seconds})
    inside[-1] = inside[-1].model_copy(update={"end_seconds": window.end_seconds})
    return inside


def _ranked(*lists: Sequence[str]) -> list[str]:
    """Terms by how many lists name them and how early, case-insensitively deduplicated."""
    scores: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for terms in lists:
        for rank, term in enumerate(terms):
            key = term.casefold()
            spelling.setdefault(key, term)
            scores[key] += len(terms) - rank
    return [spelling[key] for key, _ in scores.most_common()]


def _weighted_sentiment(windows: Sequence[Window], analyses: Sequence[Insights]) -> Sentiment:
    """The windows' scores averaged by their length in time."""
    spans = [max(w.end_seconds - w.start_seconds, 0.0) for w in windows]
    total = sum(spans) or 1.0
    score = sum(a.sentiment.score * s for a, s in zip(analyses, spans, strict=True)) / total
    label: SentimentLabel = "neutral"
    if score >= _SENTIMENT_THRESHOLD:
        label = "positive"
    elif score <= -_SENTIMENT_THRESHOLD:
        label = "negative"
    return Sentiment(label=label, score=round(score, 3))
