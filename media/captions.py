"""SubRip (SRT) and WebVTT captions from a timed transcript, within broadcasters' limits.

Captions are read, not listened to: a cue holds at most two lines of at most 42
characters (the line length of BBC and Netflix guidelines) and stays on screen
between one and seven seconds, long enough to read and short enough to follow the
speech. Cues never cross a segment boundary, so a caption never runs one speaker's
sentence into the next; they follow the transcriber's word times where it gave them
(so a pause inside a segment ends a cue rather than stretching it over silence); and
cue text is the transcript's own words, in order, so the captions say exactly what
the transcript says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_LINE_CHARS = 42
MAX_LINES = 2
MIN_CUE_SECONDS = 1.0
MAX_CUE_SECONDS = 7.0
# A silence longer than this inside a segment ends the cue: no caption over silence.
MAX_PAUSE_SECONDS = 1.5


@dataclass(frozen=True)
class TimedWord:
    """One word as the transcriber timed it."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class TimedText:
    """A stretch of speech on the video's timeline, in seconds, with its words' times
    when the transcriber gave them."""

    start: float
    end: float
    text: str
    words: tuple[TimedWord, ...] = ()


@dataclass(frozen=True)
class Cue:
    """One caption on screen: when, and its lines."""

    start: float
    end: float
    lines: tuple[str, ...]


def wrap_lines(words: Sequence[str], width: int = MAX_LINE_CHARS) -> list[str]:
    """Words filled greedily into lines of at most ``width`` characters.

    A single word longer than a line stands on its own line rather than being cut,
    since a broken word is harder to read than a long line.
    """
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fits(words: Sequence[str]) -> bool:
    return len(wrap_lines(words)) <= MAX_LINES


def _timed_words(segment: TimedText) -> list[TimedWord]:
    """The segment's words with their times: the transcriber's, when they spell the
    segment's text, else the segment's duration shared by the words' lengths."""
    words = segment.text.split()
    if [word.text for word in segment.words] == words:
        return list(segment.words)
    total = sum(len(word) for word in words) or 1
    span = max(segment.end - segment.start, 0.0)
    timed, offset = [], 0
    for word in words:
        start = segment.start + span * offset / total
        offset += len(word)
        timed.append(TimedWord(start, segment.start + span * offset / total, word))
    return timed


def _segment_cues(segment: TimedText) -> list[Cue]:
    """Words packed into cues while the text fits two lines, the time seven seconds,
    and no long pause comes between them."""
    cues: list[Cue] = []
    current: list[TimedWord] = []
    for word in _timed_words(segment):
        candidate = [*current, word]
        too_long = candidate[-1].end - candidate[0].start > MAX_CUE_SECONDS
        paused = bool(current) and word.start - current[-1].end > MAX_PAUSE_SECONDS
        if current and (too_long or paused or not _fits([w.text for w in candidate])):
            cues.append(_cue(current))
            current = [word]
        else:
            current = candidate
    if current:
        cues.append(_cue(current))
    return cues


def _cue(words: Sequence[TimedWord]) -> Cue:
    return Cue(words[0].start, words[-1].end, tuple(wrap_lines([w.text for w in words])))


def _readable_durations(cues: list[Cue]) -> list[Cue]:
    """Hold short cues for a second where the next cue leaves room; cap every cue at 7 s."""
    adjusted = []
    for index, cue in enumerate(cues):
        next_start = cues[index + 1].start if index + 1 < len(cues) else float("inf")
        end = max(cue.end, min(cue.start + MIN_CUE_SECONDS, next_start))
        end = min(end, cue.start + MAX_CUE_SECONDS)
        adjusted.append(Cue(cue.start, end, cue.lines))
    return adjusted


def build_cues(segments: Iterable[TimedText]) -> list[Cue]:
    """The captions of a transcript, in time order."""
    ordered = sorted((s for s in segments if s.text.strip()), key=lambda s: s.start)
    cues = [cue for segment in ordered for cue in _segment_cues(segment)]
    return _readable_durations(cues)


def _timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS<sep>mmm`` from seconds, rounded to the millisecond."""
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _vtt_escape(line: str) -> str:
    """WebVTT cue text treats ``&`` and ``<`` as markup, so they must be escaped."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_srt(cues: Sequence[Cue]) -> str:
    """SubRip: cues numbered from 1, times with a comma before the milliseconds."""
    blocks = [
        f"{number}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n"
        + "\n".join(cue.lines)
        for number, cue in enumerate(cues, start=1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def render_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT: the ``WEBVTT`` header, then cues with a dot before the milliseconds."""
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n"
        + "\n".join(_vtt_escape(line) for line in cue.lines)
        for cue in cues
    ]
    return "\n\n".join(["WEBVTT", *blocks]) + "\n"
