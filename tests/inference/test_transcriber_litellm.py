"""The managed transcriber through litellm's real transcription call, against a local
OpenAI-compatible endpoint (the platform's own faster-whisper behind the OpenAI API
shape), so the request, the reply parsing, the timeline shift and the price are real."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inference.pricing import load_pricing
from inference.transcriber import transcriber_from_settings
from inference.transcriber_litellm import LitellmTranscriber
from inference.transcriber_whisper import WhisperTranscriber
from media.audio import SAMPLE_RATE_HZ, extract_audio, read_wav, write_wav
from tests.fixtures.media import GeneratedMedia
from tests.fixtures.network import StallingHttpServer
from tests.inference.test_transcriber import wer
from vidinsight.errors import StageTimeout, TransientError
from vidinsight.settings import Settings

KEY_ENV = "VI_TEST_STT_API_KEY"


class OpenAIShapedServer(ThreadingHTTPServer):
    requests: list[dict[str, str]]
    engine: WhisperTranscriber
    fail_with: int


def _handler() -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server: OpenAIShapedServer = self.server  # type: ignore[assignment]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            form = BytesParser(policy=HTTP).parsebytes(head + body)
            fields: dict[str, str] = {"path": self.path, "auth": self.headers["Authorization"]}
            audio = b""
            for part in form.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                if name == "file":
                    audio = payload
                else:
                    fields[str(name)] = payload.decode()
            server.requests.append(fields)
            if server.fail_with:
                self.send_response(server.fail_with)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "busy", "type": "server_error"}}')
                return
            reply = self._transcribe(server, audio)
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _transcribe(self, server: OpenAIShapedServer, audio: bytes) -> dict[str, object]:
            with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
                handle.write(audio)
                handle.flush()
                result = server.engine.transcribe(Path(handle.name), "en")
            return {
                "task": "transcribe",
                "language": "english",
                "duration": result.audio_seconds,
                "text": result.text,
                "segments": [
                    {"id": i, "start": s.start, "end": s.end, "text": s.text}
                    for i, s in enumerate(result.segments)
                ],
                "words": [
                    {"word": w.text.strip(), "start": w.start, "end": w.end}
                    for s in result.segments
                    for w in s.words
                ],
            }

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def endpoint(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIShapedServer]:
    server = OpenAIShapedServer(("127.0.0.1", 0), _handler())
    server.requests = []
    server.engine = WhisperTranscriber.from_settings(settings)
    server.fail_with = 0
    monkeypatch.setenv(KEY_ENV, "sk-test-key")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def sentence_wav(
    generated_media: GeneratedMedia, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, float, float, str]:
    """One spoken sentence cut from the talk, with its true start, end and text."""
    folder = tmp_path_factory.mktemp("managed")
    samples = read_wav(extract_audio(generated_media.video, folder / "talk.wav"))
    start, end, text = generated_media.speech.sentences[3]
    offset = start - 0.3
    piece = samples[int(offset * SAMPLE_RATE_HZ) : int((end + 0.3) * SAMPLE_RATE_HZ)]
    return write_wav(folder / "sentence.wav", piece), offset, end, text


def test_managed_transcription_through_litellm(
    endpoint: OpenAIShapedServer, sentence_wav: tuple[Path, float, float, str]
) -> None:
    wav, offset, end, text = sentence_wav
    api_base = f"http://127.0.0.1:{endpoint.server_port}/v1"
    managed = LitellmTranscriber("openai/whisper-1", api_base=api_base, api_key_env=KEY_ENV)
    transcript = managed.transcribe(wav, "en").shifted(offset)
    [request] = endpoint.requests
    assert request["path"] == "/v1/audio/transcriptions"
    assert request["auth"] == "Bearer sk-test-key"
    assert (request["model"], request["response_format"]) == ("whisper-1", "verbose_json")
    assert wer(text, transcript.text) <= 0.25
    assert (transcript.provider, transcript.model) == ("openai", "whisper-1")
    words = [w for s in transcript.segments for w in s.words]
    assert words and abs(words[-1].end - end) <= 0.6
    price = load_pricing().cost_usd_micros("openai", "whisper-1", transcript.usage)
    assert price == round(transcript.audio_seconds * 100)  # $0.006 per minute


def test_provider_outage_is_transient(
    endpoint: OpenAIShapedServer, sentence_wav: tuple[Path, float, float, str]
) -> None:
    endpoint.fail_with = 503
    api_base = f"http://127.0.0.1:{endpoint.server_port}/v1"
    managed = LitellmTranscriber("openai/whisper-1", api_base=api_base, api_key_env=KEY_ENV)
    with pytest.raises(TransientError):
        managed.transcribe(sentence_wav[0], "en")


def test_a_provider_that_stops_answering_is_given_up_at_the_deadline(
    sentence_wav: tuple[Path, float, float, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider sends the start of its headers, then nothing: the request was given
    only the time left, so it ends at the deadline as a StageTimeout, not a provider fault."""
    monkeypatch.setenv(KEY_ENV, "sk-test-key")
    silent = StallingHttpServer("drip-headers", interval_seconds=3600)
    managed = LitellmTranscriber(
        "openai/whisper-1", api_base=silent.url("/v1"), api_key_env=KEY_ENV
    )
    deadline = time.monotonic() + 2.0
    try:
        with pytest.raises(StageTimeout):
            managed.transcribe(sentence_wav[0], "en", deadline=deadline)
    finally:
        silent.close()
    assert deadline <= time.monotonic() <= deadline + 3.0
    assert silent.connections == 1


def test_configuration_chooses_the_managed_transcriber(settings: Settings) -> None:
    chosen = transcriber_from_settings(
        settings.model_copy(update={"transcriber": "litellm", "stt_model": "groq/whisper-large-v3"})
    )
    assert isinstance(chosen, LitellmTranscriber)
    assert (chosen.provider, chosen.model_name) == ("groq", "whisper-large-v3")
