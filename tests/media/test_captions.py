"""Captions validate as SRT and WebVTT, say exactly what the transcript says, and keep
to broadcasters' limits (two lines of 42 characters, one to seven seconds on screen)."""

from __future__ import annotations

import html
import re

from media.captions import (
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    MAX_LINES,
    MIN_CUE_SECONDS,
    TimedText,
    TimedWord,
    build_cues,
    render_srt,
    render_vtt,
)

VTT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
SRT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")

TRANSCRIPT = [
    TimedText(0.0, 4.2, "Welcome to the quarterly review of the Atlas project."),
    TimedText(
        4.5,
        19.0,
        "Maria will send the revised budget & the hiring plan to finance by Friday, and"
        " the team agreed that the <launch> date moves to the second week of March because"
        " the supplier contracts are still under negotiation with three vendors.",
    ),
    TimedText(19.2, 19.6, "Thanks."),
    TimedText(3600.0, 3602.5, "An hour later, Kenji will write the release notes."),
]


def seconds(parts: tuple[str, ...]) -> float:
    hours, minutes, secs, millis = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def parse_vtt(text: str) -> list[tuple[float, float, list[str]]]:
    """The cues of a WebVTT file, failing on anything outside the format used here."""
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text.removeprefix("WEBVTT\n\n").strip("\n").split("\n\n"):
        timing, *lines = block.split("\n")
        match = VTT_TIMING.match(timing)
        assert match, timing
        assert lines and all(line.strip() and "-->" not in line for line in lines), block
        cues.append((seconds(match.groups()[:4]), seconds(match.groups()[4:]), lines))
    return cues


def parse_srt(text: str) -> list[tuple[float, float, list[str]]]:
    """The cues of a SubRip file, checking they are numbered 1, 2, 3, ..."""
    cues = []
    for number, block in enumerate(text.strip("\n").split("\n\n"), start=1):
        index, timing, *lines = block.split("\n")
        assert index == str(number), block
        match = SRT_TIMING.match(timing)
        assert match, timing
        assert lines and all(line.strip() for line in lines), block
        cues.append((seconds(match.groups()[:4]), seconds(match.groups()[4:]), lines))
    return cues


def words_of(texts: list[str]) -> str:
    return " ".join(" ".join(texts).split())


def assert_within_limits(cues: list[tuple[float, float, list[str]]]) -> None:
    for index, (start, end, lines) in enumerate(cues):
        assert len(lines) <= MAX_LINES, lines
        assert all(len(html.unescape(line)) <= MAX_LINE_CHARS for line in lines), lines
        assert end - start <= MAX_CUE_SECONDS + 0.001, (start, end)
        next_start = cues[index + 1][0] if index + 1 < len(cues) else None
        # Shorter than a second only when the next caption follows without a gap.
        assert end - start >= MIN_CUE_SECONDS - 0.001 or next_start == end, (start, end)
        assert next_start is None or next_start >= end, "cues overlap"


def test_captions_validate_and_say_what_the_transcript_says() -> None:
    cues = build_cues(TRANSCRIPT)
    vtt, srt = parse_vtt(render_vtt(cues)), parse_srt(render_srt(cues))
    spoken = words_of([segment.text for segment in TRANSCRIPT])
    assert words_of([html.unescape(" ".join(lines)) for _, _, lines in vtt]) == spoken
    assert words_of([" ".join(lines) for _, _, lines in srt]) == spoken
    assert [(s, e) for s, e, _ in vtt] == [(s, e) for s, e, _ in srt]
    assert_within_limits(vtt)
    assert len(vtt) >= 5  # the long segment is split into several readable cues
    assert vtt[0][0] == 0.0 and srt[-1][1] <= 3602.5 + MIN_CUE_SECONDS
    assert any("&amp;" in line for _, _, lines in vtt for line in lines)
    assert srt[-1][0] == 3600.0  # hours render in both formats


def test_a_short_cue_is_held_for_a_second_and_no_transcript_gives_empty_captions() -> None:
    [(start, end, lines)] = parse_srt(render_srt(build_cues([TimedText(2.0, 2.3, "Yes.")])))
    assert (start, end, lines) == (2.0, 3.0, ["Yes."])
    assert render_vtt(build_cues([])) == "WEBVTT\n"
    assert render_srt(build_cues([TimedText(1.0, 2.0, "   ")])) == ""


def test_cues_follow_the_transcribers_word_times_when_given() -> None:
    words = (
        TimedWord(2.0, 2.5, "Hello"),
        TimedWord(2.5, 3.0, "there."),
        TimedWord(8.0, 8.6, "General"),
        TimedWord(8.6, 9.5, "Kenobi."),
    )
    segment = TimedText(0.0, 10.0, "Hello there. General Kenobi.", words)
    cues = [(c.start, c.end, c.lines) for c in build_cues([segment])]
    assert cues == [(2.0, 3.0, ("Hello there.",)), (8.0, 9.5, ("General Kenobi.",))]
    # Words that do not spell the text are ignored: times are shared by length instead.
    mismatched = TimedText(0.0, 4.0, "Hello there.", words[:1])
    assert [(c.start, c.end) for c in build_cues([mismatched])] == [(0.0, 4.0)]
