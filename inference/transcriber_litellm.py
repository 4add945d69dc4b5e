"""Managed speech-to-text (OpenAI whisper-1 or gpt-4o-transcribe, Groq, Deepgram, ...)
through litellm's transcription API, chosen by configuration only (``VI_STT_MODEL``).

Provider faults are translated once, here: rate limits and 5xx are transient (the
runtime retries them with backoff), a refused request is permanent.
"""

from __future__ import annotations

import os
import time
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference.transcriber import Segment, Transcript, Word
from vidinsight.errors import (
    PermanentError,
    Reason,
    StageTimeout,
    TransientError,
    remaining_seconds,
)
from vidinsight.settings import Settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes() / float(handle.getframerate())


class LitellmTranscriber:
    """One litellm model string, e.g. ``whisper-1``, ``groq/whisper-large-v3``."""

    managed = True

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str | None = None):
        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env

    @classmethod
    def from_settings(cls, settings: Settings) -> LitellmTranscriber:
        api_bases = getattr(settings, "llm_api_bases", {}) or {}
        key_envs = getattr(settings, "llm_api_key_envs", {}) or {}
        return cls(
            settings.stt_model, api_bases.get(settings.stt_model), key_envs.get(settings.stt_model)
        )

    @property
    def provider(self) -> str:
        """The provider litellm routes to: the model string's prefix, else openai."""
        prefix, _, rest = self.model.partition("/")
        return prefix if rest else "openai"

    @property
    def model_name(self) -> str:
        prefix, _, rest = self.model.partition("/")
        return rest or prefix

    def transcribe(
        self,
        audio: Path,
        language: str | None = None,
        deadline: float | None = None,
        tenant: str | None = None,
    ) -> Transcript:
        """Transcribe ``audio`` with the provider, whose request gets the time left before
        ``deadline``; a failure once the deadline has passed is a StageTimeout. Each file
        is its own request, whatever its ``tenant``.

        The provider's client bounds each read by that time, not the whole request, so a
        provider that keeps sending a little at a time can still outlast the deadline.
        """
        import litellm

        what = f"transcribing {audio.name} with {self.model}"
        extra: dict[str, Any] = {}
        left = remaining_seconds(deadline, what)
        if left is not None:
            extra["timeout"] = left
        if self.api_base:
            extra["api_base"] = self.api_base
        if self.api_key_env:
            extra["api_key"] = os.environ.get(self.api_key_env, "")
        try:
            with audio.open("rb") as handle:
                response = litellm.transcription(
                    model=self.model,
                    file=handle,
                    language=language,
                    response_format="verbose_json",
                    timestamp_granularities=["segment", "word"],
                    max_retries=0,  # the stage runtime retries transient faults with backoff
                    **extra,
                )
        except Exception as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise StageTimeout(f"{what}: deadline passed") from exc
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        seconds = wav_seconds(audio)
        return Transcript(
            language=_field(response, "language") or language or "en",
            segments=parse_segments(response),
            provider=self.provider,
            model=self.model_name,
            audio_seconds=seconds,
            usage={"audio_seconds": seconds},
        )


def translate(exc: Exception) -> Exception:
    """A provider error as the runtime's class: rate limits, timeouts, 5xx and network
    faults are transient; any other refusal is permanent; anything else passes through.

    litellm raises its own exceptions for some providers and the OpenAI SDK's for
    others; its own subclass the SDK's, so the SDK's classes cover both.
    """
    import openai

    if isinstance(exc, openai.RateLimitError):
        return TransientError(Reason.PROVIDER_RATE_LIMITED, str(exc))
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return TransientError(Reason.PROVIDER_UNAVAILABLE, str(exc))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return TransientError(Reason.PROVIDER_UNAVAILABLE, str(exc))
        return PermanentError(Reason.INVALID_REQUEST, str(exc))
    return exc


def _field(response: Any, name: str) -> Any:
    if isinstance(response, Mapping):
        return response.get(name)
    value = getattr(response, name, None)
    if value is None and hasattr(response, "model_extra"):
        value = (response.model_extra or {}).get(name)
    return value


def parse_segments(response: Any) -> tuple[Segment, ...]:
    """Segments with their words from a verbose_json reply (words matched into segments)."""
    words = [
        Word(float(_field(w, "start")), float(_field(w, "end")), str(_field(w, "word")))
        for w in _field(response, "words") or []
    ]
    raw_segments = _field(response, "segments") or []
    if not raw_segments:
        text = str(_field(response, "text") or "")
        end = words[-1].end if words else 0.0
        return (Segment(0.0, end, text, tuple(words)),) if text else ()
    segments = []
    for raw in raw_segments:
        start, end = float(_field(raw, "start")), float(_field(raw, "end"))
        inside = tuple(w for w in words if start <= w.start < end)
        segments.append(Segment(start, end, str(_field(raw, "text")), inside))
    return tuple(segments)
