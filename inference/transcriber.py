"""The speech-to-text interface the transcribe stage talks to, and choosing one by configuration.

A transcriber takes a 16 kHz mono WAV and returns segments with word timestamps
relative to that file; ``shifted`` moves them onto the video's timeline, so a chunk
that starts at 60 s reports its first word near 60 s, not near 0 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from vidinsight.settings import Settings


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


_SENTENCE_ENDINGS = (".", "?", "!")


def sentence_segments(segment: Segment) -> list[Segment]:
    """``segment`` cut after every word that ends a sentence, each part timed by its words.

    Whisper's batched pipeline returns whatever its voice detector merged (up to 30 s of
    speech) as one segment; captions, the transcript view and chapter boundaries all want
    sentences, and the word timestamps say exactly where each one starts and ends.
    """
    if not segment.words:
        return [segment]
    parts: list[list[Word]] = [[]]
    for word in segment.words:
        parts[-1].append(word)
        if word.text.strip().endswith(_SENTENCE_ENDINGS):
            parts.append([])
    return [
        Segment(words[0].start, words[-1].end, "".join(w.text for w in words).strip(), tuple(words))
        for words in parts
        if words
    ]


@dataclass(frozen=True)
class Transcript:
    """What one transcription returned, and what the provider bills for it."""

    language: str
    segments: tuple[Segment, ...]
    provider: str
    model: str
    audio_seconds: float
    usage: dict[str, float] = field(default_factory=dict)
    # Clips decoded in the model window this one was decoded in (inference/packing.py).
    window_clips: int = 1

    @property
    def text(self) -> str:
        return " ".join(segment.text.strip() for segment in self.segments).strip()

    @property
    def word_count(self) -> int:
        return sum(len(segment.text.split()) for segment in self.segments)

    def shifted(self, offset_seconds: float) -> Transcript:
        """The same transcript with every time moved by ``offset_seconds``."""
        return replace(
            self,
            segments=tuple(
                Segment(
                    start=s.start + offset_seconds,
                    end=s.end + offset_seconds,
                    text=s.text,
                    words=tuple(
                        Word(
                            w.start + offset_seconds, w.end + offset_seconds, w.text, w.probability
                        )
                        for w in s.words
                    ),
                )
                for s in self.segments
            ),
        )

    def segments_json(self) -> list[dict[str, Any]]:
        """Segments as plain data for storage (sinks.transcripts)."""
        return [
            {
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text.strip(),
                "words": [
                    {"start": round(w.start, 3), "end": round(w.end, 3), "word": w.text.strip(),
                     "probability": round(w.probability, 3)}
                    for w in s.words
                ],
            }
            for s in self.segments
        ]  # fmt: skip


class Transcriber(Protocol):
    """Speech-to-text for one audio file."""

    # Whether each call is billed by a provider (a managed API), so the customer's
    # budget must be asked before it; local models run on our own CPUs.
    managed: bool

    @property
    def provider(self) -> str:
        """Who is paid for a transcription (``local`` for our own CPUs)."""
        ...

    @property
    def model_name(self) -> str:
        """The model as the price book names it."""
        ...

    def transcribe(
        self,
        audio: Path,
        language: str | None = None,
        deadline: float | None = None,
        tenant: str | None = None,
    ) -> Transcript:
        """Transcribe ``audio``; StageTimeout once ``deadline`` (a ``time.monotonic()``
        instant, None for no bound) has passed, so one chunk cannot outlive its handler.
        ``tenant``, the customer, bounds what the audio may be processed together with."""
        ...


def transcriber_from_settings(settings: Settings) -> Transcriber:
    """The transcriber the configuration names: ``faster-whisper`` (default) or ``litellm``."""
    if settings.transcriber == "faster-whisper":
        from inference.transcriber_whisper import WhisperTranscriber

        return WhisperTranscriber.from_settings(settings)
    if settings.transcriber == "litellm":
        from inference.transcriber_litellm import LitellmTranscriber

        return LitellmTranscriber.from_settings(settings)
    raise ValueError(
        f"unknown transcriber {settings.transcriber!r} (VI_TRANSCRIBER: faster-whisper or litellm)"
    )
