"""Speech-to-text on the generated talk: word error rate, word times on the video timeline,
and the deadline that bounds a transcription."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import pytest
from prometheus_client import REGISTRY

from inference import transcriber_whisper
from inference.packing import GAP_SECONDS, WINDOW_SECONDS
from inference.transcriber import Transcript, transcriber_from_settings
from inference.transcriber_whisper import (
    WhisperTranscriber,
    concurrent_transcriptions,
    verify_model,
    worker_cores,
)
from media.audio import SAMPLE_RATE_HZ, copy_span, extract_audio, read_wav, write_wav
from media.chunking import plan_chunks
from tests.fixtures.media import GeneratedMedia
from tests.fixtures.waiting import wait_until
from vidinsight.errors import PermanentError, StageTimeout
from vidinsight.settings import Settings

MAX_WER = 0.15
# Word times must land within this distance of the sentence that holds the word.
TIME_SLACK_SECONDS = 0.6


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation, as WER is usually scored."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(truth: str, hypothesis: str) -> float:
    return float(jiwer.wer(" ".join(words_of(truth)), " ".join(words_of(hypothesis))))


@pytest.fixture(scope="module")
def talk_wav(generated_media: GeneratedMedia, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_audio(generated_media.video, tmp_path_factory.mktemp("stt") / "talk.wav")


@pytest.fixture(scope="module")
def talk_transcript(settings: Settings, talk_wav: Path) -> Transcript:
    return transcriber_from_settings(settings).transcribe(talk_wav, "en")


def whisper(settings: Settings, **update: object) -> WhisperTranscriber:
    return WhisperTranscriber.from_settings(settings.model_copy(update=update))


def words_misplaced(
    transcript: Transcript, sentences: list[tuple[float, float, str]]
) -> list[tuple[str, float]]:
    """The words whose start is not within TIME_SLACK_SECONDS of a spoken sentence."""
    return [
        (w.text, w.start)
        for s in transcript.segments
        for w in s.words
        if not any(
            start - TIME_SLACK_SECONDS <= w.start <= end + TIME_SLACK_SECONDS
            for start, end, _ in sentences
        )
    ]


def test_word_error_rate_on_generated_speech(
    generated_media: GeneratedMedia, talk_transcript: Transcript
) -> None:
    rate = wer(generated_media.speech.text, talk_transcript.text)
    assert rate <= MAX_WER, f"WER {rate:.1%}: {talk_transcript.text[:200]}"
    assert talk_transcript.model == "faster-whisper-tiny.en"
    assert talk_transcript.audio_seconds == pytest.approx(generated_media.duration_seconds, abs=1)


def test_word_times_fall_in_their_spoken_sentences(
    generated_media: GeneratedMedia, talk_transcript: Transcript
) -> None:
    words = [w for s in talk_transcript.segments for w in s.words]
    assert len(words) > 400
    misplaced = words_misplaced(talk_transcript, generated_media.speech.sentences)
    assert len(misplaced) <= 0.02 * len(words), misplaced[:10]


def test_chunk_transcript_is_shifted_to_the_video_timeline(
    settings: Settings, generated_media: GeneratedMedia, talk_wav: Path, tmp_path: Path
) -> None:
    """A chunk cut from the middle reports its words at their place in the whole video."""
    start, end, sentence = generated_media.speech.sentences[20]
    offset = start - 0.3
    samples = read_wav(talk_wav)
    piece = samples[int(offset * SAMPLE_RATE_HZ) : int((end + 0.3) * SAMPLE_RATE_HZ)]
    chunk = write_wav(tmp_path / "chunk.wav", piece)
    transcript = transcriber_from_settings(settings).transcribe(chunk, "en").shifted(offset)
    words = [w for s in transcript.segments for w in s.words]
    assert wer(sentence, transcript.text) <= 0.25
    assert abs(words[0].start - start) <= TIME_SLACK_SECONDS
    assert abs(words[-1].end - end) <= TIME_SLACK_SECONDS


def test_model_with_wrong_hash_is_refused(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not the tiny.en weights")
    with pytest.raises(PermanentError) as caught:
        verify_model(tmp_path, settings.whisper_model_sha256)
    assert "expected " + settings.whisper_model_sha256 in caught.value.message


def test_unknown_transcriber_is_a_configuration_error(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown transcriber"):
        transcriber_from_settings(settings.model_copy(update={"transcriber": "nope"}))


def test_a_passed_deadline_transcribes_nothing(settings: Settings, talk_wav: Path) -> None:
    with pytest.raises(StageTimeout):
        transcriber_from_settings(settings).transcribe(talk_wav, "en", deadline=time.monotonic())


def test_a_deadline_passing_mid_transcription_stops_it(settings: Settings, talk_wav: Path) -> None:
    """The talk takes seconds to decode; the deadline, a second away, passes before its
    segments are drained, and the next segment raises instead of being kept."""
    transcriber = whisper(settings)
    deadline = time.monotonic() + 1.0
    with pytest.raises(StageTimeout):
        transcriber.transcribe(talk_wav, "en", deadline=deadline)
    assert time.monotonic() >= deadline
    turns = transcriber.loaded().turns
    taken = sum(turns.acquire(timeout=0) for _ in range(transcriber.workers))
    for _ in range(taken):
        turns.release()
    assert taken == transcriber.workers, "the model's turn was not given back"


def test_waiting_for_the_model_is_bounded_by_the_deadline(
    settings: Settings, talk_wav: Path
) -> None:
    """Other threads' transcriptions hold every turn of the model: this one waits only
    until its own deadline, then gives up."""
    transcriber = whisper(settings, whisper_workers=2)
    turns = transcriber.loaded().turns
    for _ in range(transcriber.workers):
        turns.acquire()
    deadline = time.monotonic() + 0.5
    try:
        with pytest.raises(StageTimeout, match="waiting for the model"):
            transcriber.transcribe(talk_wav, "en", deadline=deadline)
    finally:
        for _ in range(transcriber.workers):
            turns.release()
    assert deadline <= time.monotonic() <= deadline + 3.0


def test_chunks_transcribed_at_once_keep_their_own_words_and_times(
    settings: Settings, generated_media: GeneratedMedia, talk_wav: Path, tmp_path: Path
) -> None:
    """The talk cut as preprocess cuts it (60 s chunks, at silences) and transcribed from
    four handler threads with two turns, as a 2-core worker does: every chunk gets the
    very words and times it gets alone (calls running at once share no state), within
    the WER bound, and on the video's timeline once shifted by its start."""
    transcriber = whisper(settings, whisper_workers=2)
    spans = plan_chunks(talk_wav, target_seconds=60.0, search_seconds=10.0)
    chunks = [
        copy_span(talk_wav, s.start_sample, s.end_sample, tmp_path / f"{s.index}.wav")
        for s in spans
    ]
    alone = [transcriber.transcribe(chunk, "en") for chunk in chunks]
    with ThreadPoolExecutor(max_workers=4) as pool:
        at_once = list(pool.map(lambda chunk: transcriber.transcribe(chunk, "en"), chunks))
    assert len(chunks) >= 3
    assert [t.segments_json() for t in at_once] == [t.segments_json() for t in alone]
    on_timeline = [t.shifted(s.start_seconds) for t, s in zip(at_once, spans, strict=True)]
    text = " ".join(t.text for t in on_timeline)
    assert wer(generated_media.speech.text, text) <= MAX_WER, text[:200]
    sentences = generated_media.speech.sentences
    misplaced = [word for t in on_timeline for word in words_misplaced(t, sentences)]
    words = sum(len(s.words) for t in on_timeline for s in t.segments)
    assert len(misplaced) <= 0.02 * words, misplaced[:10]


def pack_metric() -> tuple[float, float]:
    """How many windows were packed so far, and how many clips they held."""
    count = REGISTRY.get_sample_value("vidinsight_transcribe_pack_clips_count") or 0.0
    return count, REGISTRY.get_sample_value("vidinsight_transcribe_pack_clips_sum") or 0.0


def test_short_clips_of_one_customer_waiting_for_the_model_share_one_window(
    settings: Settings, generated_media: GeneratedMedia, talk_wav: Path, tmp_path: Path
) -> None:
    """Four clips of about 5 s, cut at silences as preprocess cuts, wait for the one turn
    of the model: they are transcribed in one window (the metric counts one pack of four),
    each gets the words it gets alone up to a few that a shared window changes, and every
    word keeps its time in its own clip."""
    transcriber = whisper(settings, whisper_workers=1, whisper_pack=True)
    spans = plan_chunks(talk_wav, target_seconds=5.5, search_seconds=1.0)[:4]
    chunks = [
        copy_span(talk_wav, s.start_sample, s.end_sample, tmp_path / f"{s.index}.wav")
        for s in spans
    ]
    seconds = [s.end_seconds - s.start_seconds for s in spans]
    assert sum(seconds) + 3 * GAP_SECONDS <= WINDOW_SECONDS
    alone = [transcriber.transcribe(chunk, "en", tenant="c1") for chunk in chunks]
    turns = transcriber.loaded().turns
    before = pack_metric()
    assert turns.acquire()
    with ThreadPoolExecutor(max_workers=4) as pool:
        calls = []
        for count, chunk in enumerate(chunks, start=1):  # they wait in the order of the talk
            calls.append(pool.submit(transcriber.transcribe, chunk, "en", tenant="c1"))
            wait_until(lambda: turns.waiting == len(calls), 60, f"{count} clips waiting")
        turns.release()
        packed = [call.result(timeout=120) for call in calls]
    after = pack_metric()
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 4.0)
    for transcript, length in zip(packed, seconds, strict=True):
        times = [t for s in transcript.segments for w in s.words for t in (w.start, w.end)]
        assert times and all(0.0 <= t <= length for t in times)
    assert wer(" ".join(t.text for t in alone), " ".join(t.text for t in packed)) <= 0.1
    on_timeline = [t.shifted(s.start_seconds) for t, s in zip(packed, spans, strict=True)]
    sentences = generated_media.speech.sentences
    misplaced = [word for t in on_timeline for word in words_misplaced(t, sentences)]
    assert not misplaced


def test_two_transcriptions_run_at_once(settings: Settings, talk_wav: Path, tmp_path: Path) -> None:
    """With two turns, a transcription proceeds while another holds the model's other turn
    (the handler threads of a 2-core worker share one model)."""
    transcriber = whisper(settings, whisper_workers=2)
    chunk = copy_span(talk_wav, 0, 30 * SAMPLE_RATE_HZ, tmp_path / "chunk.wav")
    turns = transcriber.loaded().turns
    assert turns.acquire()
    try:
        transcript = transcriber.transcribe(chunk, "en", deadline=time.monotonic() + 60)
    finally:
        turns.release()
    assert transcript.word_count > 40


def test_transcriptions_at_once_match_the_cores(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads x transcriptions = the worker's cores, a container's CPU limit included."""
    limit = tmp_path / "cpu.max"
    monkeypatch.setattr(transcriber_whisper, "CPU_LIMIT_FILE", limit)
    monkeypatch.setattr(transcriber_whisper.os, "sched_getaffinity", lambda _: set(range(16)))
    assert worker_cores() == 16  # no cgroup v2 limit
    limit.write_text("max 100000\n")
    assert worker_cores() == 16
    limit.write_text("150000 100000\n")
    assert worker_cores() == 2
    limit.write_text("400000 100000\n")
    one_thread = settings.model_copy(update={"whisper_cpu_threads": 1, "whisper_workers": 0})
    assert concurrent_transcriptions(one_thread) == 4
    two_threads = one_thread.model_copy(update={"whisper_cpu_threads": 2})
    assert concurrent_transcriptions(two_threads) == 2
    assert concurrent_transcriptions(one_thread.model_copy(update={"whisper_workers": 3})) == 3


def test_handler_threads_asking_at_once_share_one_model(settings: Settings) -> None:
    """The first chunks of a job reach a fresh worker's handler threads together: they
    must share one model and its turns, not each load one and run past the cores."""
    transcriber = whisper(settings, whisper_workers=3)  # a configuration no other test loads
    with ThreadPoolExecutor(max_workers=4) as pool:
        models = list(pool.map(lambda _: transcriber.loaded(), range(4)))
    assert all(model is models[0] for model in models)
