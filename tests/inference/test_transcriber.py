"""Speech-to-text on the generated talk: word error rate, word times on the video timeline,
and the deadline that bounds a transcription."""

from __future__ import annotations

import re
import time
from pathlib import Path

import jiwer
import pytest

from inference.transcriber import Transcript, transcriber_from_settings
from inference.transcriber_whisper import _TRANSCRIBING, verify_model
from media.audio import SAMPLE_RATE_HZ, extract_audio, read_wav, write_wav
from tests.fixtures.media import GeneratedMedia
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
    sentences = generated_media.speech.sentences
    words = [w for s in talk_transcript.segments for w in s.words]
    assert len(words) > 400
    misplaced = [
        (w.text, w.start)
        for w in words
        if not any(
            start - TIME_SLACK_SECONDS <= w.start <= end + TIME_SLACK_SECONDS
            for start, end, _ in sentences
        )
    ]
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
    transcriber = transcriber_from_settings(settings)
    deadline = time.monotonic() + 1.0
    with pytest.raises(StageTimeout):
        transcriber.transcribe(talk_wav, "en", deadline=deadline)
    assert time.monotonic() >= deadline
    assert _TRANSCRIBING.acquire(blocking=False), "the model's turn was not given back"
    _TRANSCRIBING.release()


def test_waiting_for_the_model_is_bounded_by_the_deadline(
    settings: Settings, talk_wav: Path
) -> None:
    """Another thread's transcription holds the model: this one waits only until its own
    deadline, then gives up."""
    transcriber = transcriber_from_settings(settings)
    deadline = time.monotonic() + 0.5
    with _TRANSCRIBING, pytest.raises(StageTimeout, match="waiting for the model"):
        transcriber.transcribe(talk_wav, "en", deadline=deadline)
    assert deadline <= time.monotonic() <= deadline + 3.0
