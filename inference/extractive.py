"""The offline default: insights by extractive methods, served to litellm as ``local/extractive``.

No model weights and no network: every field of the insight schema is filled from the
transcript's own sentences (frequency-ranked summary and keywords, a small sentiment
lexicon, chapters where the vocabulary shifts at a scene cut, action items from
sentences in which a named person will, should or is asked to do something). It is
registered with litellm as a custom provider so stages call it exactly like any LLM,
and it is named for what it is: nothing here generates text.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import Choices, Message, ModelResponse, Usage
from litellm.utils import custom_llm_setup

from inference.insight_schema import (
    ActionItem,
    Chapter,
    Insights,
    KeyMoment,
    Sentiment,
    SentimentLabel,
)
from inference.litellm_logs import route_litellm_logs
from inference.prompts.transcript import TranscriptText, parse_transcript
from inference.prompts.windows import estimated_tokens

route_litellm_logs()

PROVIDER = "local"
MODEL = "local/extractive"

# Sentences on each side of a candidate boundary compared for a change of vocabulary,
# and the cosine similarity below which the topic counts as changed.
_SHIFT_WINDOW_SENTENCES = 3
_SHIFT_MAX_SIMILARITY = 0.15
_SUMMARY_MAX_SENTENCES = 5
_KEYWORDS = 10
_KEY_MOMENTS = 5
_SENTIMENT_THRESHOLD = 0.2


def _word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``: word lists stay readable as prose."""
    return frozenset(text.split())


_STOPWORDS = _word_set(
    """a about above after again against all also am an and any are aren as at be because
    been before being below between both but by can could did do does doing done down during
    each else even ever every few for from further get gets getting go goes going gone got
    had has have having he her here hers herself him himself his how however i if in into is
    it its itself just know let lets like made make makes many may me might more most much
    must my myself need needs no nor not now of off okay on once one only or other our ours
    ourselves out over own per please quite really right said same say says see she should
    so some still such sure than thank thanks that the their theirs them themselves then
    there these they thing things think this those though through to today too under until
    up upon us very want was we well were what when where which while who whom why will
    with would yes yet you your yours yourself yourselves going gonna hello everyone ll ve re
    next week also first second last"""
)

# Capitalised words that start sentences or name times, never a person.
_NOT_NAMES = _word_set(
    """I We You They He She It This That These Those There Here The A An And But So Or If
    When Where What Why How Who Which Please Let Lets Thanks Thank Okay Ok Yes No Our My
    Your Their Everyone Everybody Someone Somebody Nobody All Also Then Now Next Today
    Tomorrow Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February
    March April May June July August September October November December Hello Hi Good
    Great First Second Finally After Before Once Each Every Some Most Many Meanwhile"""
)

_POSITIVE = _word_set(
    """good great excellent happy glad pleased success successful win wins won growth grew
    improve improved improvement strong better best love enjoy excited exciting positive
    ahead progress profitable benefit gain gains record recommend easy well"""
)
_NEGATIVE = _word_set(
    """bad poor terrible sad unhappy fail failed failure loss losses lose lost decline
    declined weak worse worst problem problems issue issues risk risks delay delayed
    difficult hard negative concern concerns worried worry crisis broken bug bugs
    behind late"""
)

_NAME = r"[A-Z][a-z]+"
_MODAL = (
    r"(?:will|shall|is going to|are going to|needs to|need to|has to|have to|must|"
    r"should|is to|agreed to|promised to|'ll)"
)
# "Alice will send the report", "Alice and Bob should meet".
_FUTURE_ACTION = re.compile(rf"\b(?P<name>{_NAME})(?:\s+and\s+{_NAME})?\s+{_MODAL}\s+(?P<task>.+)")
# "Bob, please schedule the interviews", "Carol, can you check the numbers".
_ADDRESSED_ACTION = re.compile(
    rf"\b(?P<name>{_NAME}),\s+(?:please|can you|could you|would you|you will|you should)"
    r"\s+(?P<task>.+)"
)
_DUE = re.compile(
    r"\b(?P<due>(?:by|before|until|on)\s+(?:the\s+end\s+of\s+)?(?:next\s+|this\s+)?"
    r"[A-Za-z]+(?:\s+\d{1,2})?|tomorrow|tonight|next\s+[a-z]+)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


@dataclass(frozen=True)
class _Sentence:
    """One sentence of the transcript, with when it is said."""

    start_seconds: float
    end_seconds: float
    text: str
    terms: tuple[str, ...]


def extract_insights(transcript: TranscriptText) -> Insights:
    """Fill the insight schema from the transcript alone."""
    sentences = _sentences(transcript)
    frequencies = Counter(term for sentence in sentences for term in sentence.terms)
    scores = [_sentence_score(sentence, frequencies) for sentence in sentences]
    chapters = _chapters(transcript, sentences, scores)
    keywords = [term for term, _ in _ranked_terms(sentences)[:_KEYWORDS]]
    action_items = [item for sentence in sentences if (item := _action_item(sentence))]
    return Insights(
        summary=_summary(sentences, scores, chapters),
        chapters=chapters,
        topics=_topics(chapters),
        keywords=keywords,
        key_moments=_key_moments(sentences, scores),
        sentiment=_sentiment(sentence.text for sentence in sentences),
        entities=_entities(sentences, [item.owner for item in action_items]),
        action_items=action_items,
        questions=[sentence.text for sentence in sentences if sentence.text.endswith("?")],
    )


def _sentences(transcript: TranscriptText) -> list[_Sentence]:
    """Split every segment into sentences, timing each by its share of the segment's text."""
    sentences = []
    for segment in transcript.segments:
        parts = [part.strip() for part in _SENTENCE_END.split(segment.text) if part.strip()]
        total = sum(len(part) for part in parts) or 1
        span = max(segment.end_seconds - segment.start_seconds, 0.0)
        offset = 0
        for part in parts:
            start = segment.start_seconds + span * offset / total
            offset += len(part)
            end = segment.start_seconds + span * offset / total
            sentences.append(_Sentence(start, end, part, tuple(_terms(part))))
    return sentences


def _terms(text: str) -> list[str]:
    """Content words, lower-cased: the vocabulary rankings and topic shifts are made of."""
    words = (word.lower().strip("'-") for word in _WORD.findall(text))
    return [word for word in words if len(word) >= 3 and word not in _STOPWORDS]


def _sentence_score(sentence: _Sentence, frequencies: Counter[str]) -> float:
    """How much of the transcript's frequent vocabulary a sentence carries, per word."""
    if not sentence.terms:
        return 0.0
    return sum(frequencies[term] for term in sentence.terms) / (len(sentence.terms) + 2)


def _ranked_terms(sentences: list[_Sentence]) -> list[tuple[str, int]]:
    """Terms by the number of sentences using them, ties broken by first use.

    Each sentence's terms are counted in the order spoken, never a set's: a set's order
    changes with the process's string hashing, so ties (terms first used in the same
    sentence) would rank differently after a restart, and so would the insights and the
    tokens billed for them.
    """
    counts: Counter[str] = Counter()
    for sentence in sentences:
        counts.update(dict.fromkeys(sentence.terms, 1))
    first_use: dict[str, int] = {}
    for index, sentence in enumerate(sentences):
        for term in sentence.terms:
            first_use.setdefault(term, index)
    return sorted(counts.items(), key=lambda item: (-item[1], first_use[item[0]]))


def _cosine(left: Counter[str], right: Counter[str]) -> float:
    """Similarity of two bags of words (0: nothing shared)."""
    shared = sum(left[term] * right[term] for term in left.keys() & right.keys())
    norm = math.sqrt(sum(v * v for v in left.values())) * math.sqrt(
        sum(v * v for v in right.values())
    )
    return shared / norm if norm else 0.0


def _boundary_candidates(transcript: TranscriptText, sentences: list[_Sentence]) -> list[float]:
    """Where a chapter may start: the scene cuts, or sentence starts when there are none."""
    inside = [cut for cut in transcript.scene_cuts_seconds if 0 < cut < transcript.duration_seconds]
    if inside:
        return inside
    return [sentence.start_seconds for sentence in sentences[1:]]


def _topic_shift_boundaries(transcript: TranscriptText, sentences: list[_Sentence]) -> list[float]:
    """The candidate boundaries across which the vocabulary changes."""
    boundaries = []
    for cut in _boundary_candidates(transcript, sentences):
        before = [s for s in sentences if s.start_seconds < cut][-_SHIFT_WINDOW_SENTENCES:]
        after = [s for s in sentences if s.start_seconds >= cut][:_SHIFT_WINDOW_SENTENCES]
        if not before or not after:
            continue
        left = Counter(term for s in before for term in s.terms)
        right = Counter(term for s in after for term in s.terms)
        if _cosine(left, right) <= _SHIFT_MAX_SIMILARITY:
            boundaries.append(cut)
    return boundaries


def _chapters(
    transcript: TranscriptText, sentences: list[_Sentence], scores: list[float]
) -> list[Chapter]:
    """Contiguous chapters from 0 to the end, split where the topic shifts."""
    duration = transcript.duration_seconds
    edges = [0.0, *_topic_shift_boundaries(transcript, sentences), duration]
    chapters: list[Chapter] = []
    for start, end in itertools.pairwise(edges):
        members = [i for i, s in enumerate(sentences) if start <= s.start_seconds < end]
        if not members and chapters:
            continue
        chapter_sentences = [sentences[i] for i in members]
        best = max(members, key=lambda i: scores[i], default=None)
        chapters.append(
            Chapter(
                start_seconds=start,
                end_seconds=end,
                title=_title(chapter_sentences),
                summary="" if best is None else sentences[best].text,
                sentiment=_sentiment(s.text for s in chapter_sentences),
            )
        )
    return _close_gaps(chapters, duration)


def _close_gaps(chapters: list[Chapter], duration: float) -> list[Chapter]:
    """Stretch each chapter to the next one's start (and the last to the end): no gaps."""
    closed = []
    for index, chapter in enumerate(chapters):
        end = chapters[index + 1].start_seconds if index + 1 < len(chapters) else duration
        closed.append(chapter.model_copy(update={"end_seconds": end}))
    return closed


def _title(sentences: list[_Sentence]) -> str:
    """The chapter's two most used terms."""
    terms = [term for term, _ in _ranked_terms(sentences)[:2]]
    return " and ".join(terms).capitalize() if terms else "Untitled"


def _topics(chapters: list[Chapter]) -> list[str]:
    """One topic per chapter: its leading term, without repeats."""
    topics: list[str] = []
    for chapter in chapters:
        lead = chapter.title.split(" and ")[0].lower()
        if lead and lead != "untitled" and lead not in topics:
            topics.append(lead)
    return topics


def _summary(sentences: list[_Sentence], scores: list[float], chapters: list[Chapter]) -> str:
    """Each chapter's best sentence, plus the best of the rest, in the order spoken."""
    chosen = {chapter.summary for chapter in chapters if chapter.summary}
    for index in sorted(range(len(sentences)), key=lambda i: -scores[i]):
        if len(chosen) >= _SUMMARY_MAX_SENTENCES:
            break
        chosen.add(sentences[index].text)
    ordered = [s.text for s in sentences if s.text in chosen]
    return " ".join(dict.fromkeys(ordered))


def _key_moments(sentences: list[_Sentence], scores: list[float]) -> list[KeyMoment]:
    """The highest-scoring sentences, with their times, in the order spoken."""
    best = sorted(range(len(sentences)), key=lambda i: -scores[i])[:_KEY_MOMENTS]
    return [
        KeyMoment(at_seconds=sentences[i].start_seconds, text=sentences[i].text)
        for i in sorted(best)
    ]


def _sentiment(texts: Iterable[str]) -> Sentiment:
    """Lexicon sentiment: positive minus negative words over all sentiment words."""
    words = [word.lower() for text in texts for word in _WORD.findall(text)]
    positive = sum(word in _POSITIVE for word in words)
    negative = sum(word in _NEGATIVE for word in words)
    score = (positive - negative) / max(positive + negative, 1)
    label: SentimentLabel = "neutral"
    if score > _SENTIMENT_THRESHOLD:
        label = "positive"
    elif score < -_SENTIMENT_THRESHOLD:
        label = "negative"
    return Sentiment(label=label, score=round(score, 3))


def _entities(sentences: list[_Sentence], owners: list[str]) -> list[str]:
    """Action item owners and capitalised words inside sentences, most named first.

    A capitalised first word only says a sentence began, so it counts only when the
    same word also appears inside a sentence or owns an action item.
    """
    counts: Counter[str] = Counter(owners)
    for sentence in sentences:
        for match in re.finditer(rf"\b{_NAME}\b", sentence.text):
            if match.start() > 0 and match.group() not in _NOT_NAMES:
                counts[match.group()] += 1
    return [word for word, _ in counts.most_common()]


def _action_item(sentence: _Sentence) -> ActionItem | None:
    """An action item if the sentence gives a named person something to do."""
    for pattern in (_ADDRESSED_ACTION, _FUTURE_ACTION):
        match = pattern.search(sentence.text)
        if match and match.group("name") not in _NOT_NAMES:
            task = match.group("task").rstrip(".!?").strip()
            due = _DUE.search(task)
            return ActionItem(
                owner=match.group("name"),
                task=task,
                due=None if due is None else due.group("due"),
                at_seconds=sentence.start_seconds,
            )
    return None


class ExtractiveProvider(CustomLLM):
    """litellm's view of the extractive analyser: a chat completion whose reply is Insights JSON."""

    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        """Answer the prompt's transcript with insights.

        The usage is an estimate of the prompt's and the reply's tokens (four characters
        each, as windows are sized), so this provider is billed by tokens like any other
        model, and the same prompt always costs the same, whatever the time it took.
        """
        text = "\n".join(_message_text(message) for message in kwargs["messages"])
        reply = extract_insights(parse_transcript(text)).model_dump_json()
        response: ModelResponse = kwargs["model_response"]
        response.choices = [
            Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=reply))
        ]
        response.model = MODEL
        prompt_tokens, reply_tokens = estimated_tokens(text), estimated_tokens(reply)
        response.usage = Usage(  # type: ignore[attr-defined]
            prompt_tokens=prompt_tokens,
            completion_tokens=reply_tokens,
            total_tokens=prompt_tokens + reply_tokens,
        )
        return response


def _message_text(message: dict[str, Any]) -> str:
    """A chat message's text, whether its content is a string or a list of parts."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))


_provider = ExtractiveProvider()


def register_extractive_provider() -> None:
    """Make ``local/extractive`` a litellm model; calling it again changes nothing."""
    entries = litellm.custom_provider_map
    if any(entry.get("provider") == PROVIDER for entry in entries):
        return
    entries.append({"provider": PROVIDER, "custom_handler": _provider})
    custom_llm_setup()  # litellm otherwise learns the name only inside its first call
