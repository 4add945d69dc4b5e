"""The one text format in which a transcript reaches a model, and its reader.

Prompts carry the transcript as lines ``[start-end] text`` plus the duration and the
scene cuts, so a hosted LLM reads it as plain text and the extractive provider parses
the very same messages back: both providers answer one prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEGMENT_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\]\s*(.*)$")
_DURATION = "DURATION_SECONDS:"
_SCENE_CUTS = "SCENE_CUTS_SECONDS:"


@dataclass(frozen=True)
class Segment:
    """A stretch of speech with its times in seconds."""

    start_seconds: float
    end_seconds: float
    text: str


@dataclass(frozen=True)
class TranscriptText:
    """What a prompt says about one video: its length, scene cuts and speech."""

    duration_seconds: float
    scene_cuts_seconds: list[float]
    segments: list[Segment]


def render_transcript(transcript: TranscriptText) -> str:
    """The transcript block of a prompt."""
    cuts = ", ".join(f"{cut:.2f}" for cut in transcript.scene_cuts_seconds)
    lines = [
        f"{_DURATION} {transcript.duration_seconds:.2f}",
        f"{_SCENE_CUTS} {cuts}",
        "TRANSCRIPT:",
    ]
    lines += [
        f"[{seg.start_seconds:.2f}-{seg.end_seconds:.2f}] {seg.text.strip()}"
        for seg in transcript.segments
    ]
    return "\n".join(lines)


def parse_transcript(text: str) -> TranscriptText:
    """Read back a block written by ``render_transcript`` (other lines are ignored)."""
    duration = 0.0
    cuts: list[float] = []
    segments: list[Segment] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(_DURATION):
            duration = float(line.removeprefix(_DURATION).strip() or 0.0)
        elif line.startswith(_SCENE_CUTS):
            values = line.removeprefix(_SCENE_CUTS).split(",")
            cuts = [float(value) for value in values if value.strip()]
        elif match := _SEGMENT_LINE.match(line):
            start, end, words = match.groups()
            segments.append(Segment(float(start), float(end), words))
    if segments:
        duration = max(duration, segments[-1].end_seconds)
    return TranscriptText(duration, sorted(cuts), segments)
