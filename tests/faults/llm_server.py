"""An OpenAI chat-completions server whose answers depend on nothing but the request.

The soak compares a faulted run with a fault-free one, so the model behind the analyse
stage must say the same thing, at the same token usage, every time it is asked the same
question. This server answers with the project's own extractive analysis of the prompt
(exactly what the ``local/extractive`` provider would say) and counts tokens as
``len(text) // 4`` (about four characters a token, the usual rule of thumb for English),
for the prompt (the messages' texts joined as the extractive provider joins them) and
for the reply. Its ``mode`` turns it into a failing provider: ``"429"`` (rate limited,
with Retry-After), ``"500"``, or ``"hang"`` (the request is held unanswered until the
mode changes, then answered in the new mode, or until the server stops, then dropped).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

from inference.extractive import _message_text, extract_insights
from inference.prompts.transcript import parse_transcript

Mode = Literal["ok", "429", "500", "hang"]
MODES: tuple[Mode, ...] = ("ok", "429", "500", "hang")
_CHARS_PER_TOKEN = 4
# A client that connects and sends nothing must not hold a handler thread for ever.
_READ_TIMEOUT_SECONDS = 10.0


def token_count(text: str) -> int:
    """The usage reported for ``text``: a pure function of it, so two runs bill alike."""
    return len(text) // _CHARS_PER_TOKEN


def completion(request: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion body answering ``request``: the same request, the same body."""
    messages = request.get("messages") or []
    prompt = "\n".join(_message_text(message) for message in messages)
    content = extract_insights(parse_transcript(prompt)).model_dump_json()
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    prompt_tokens, completion_tokens = token_count(prompt), token_count(content)
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _Server(ThreadingHTTPServer):
    # A burst of analyse calls connects at once; the default backlog of 5 would drop SYNs
    # and turn them into second-long retransmit delays.
    request_queue_size = 128
    # Not daemons: server_close() then joins every handler thread, so none outlives stop().
    daemon_threads = False


class LlmServer:
    """The server on a free loopback port, serving from a background thread.

    ``requests`` counts requests by the mode they met on arrival (a held request counts
    as ``"hang"`` even if a later mode answers it); ``held`` is how many wait right now.
    """

    def __init__(self, retry_after_seconds: int = 1) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.requests: Counter[str] = Counter()
        self.held = 0
        self._mode: Mode = "ok"
        self._stopped = False
        self._changed = threading.Condition()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="llm-server", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL to give litellm as ``api_base``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Answer from now on as ``mode``; requests held by ``"hang"`` are answered so too."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        with self._changed:
            self._mode = cast(Mode, mode)
            self._changed.notify_all()

    def start(self) -> LlmServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Drop held requests, stop serving and wait for every handler thread to end."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()

    def __enter__(self) -> LlmServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def admit(self) -> Mode | None:
        """The mode to answer a request that just arrived in; None: the server stopped first."""
        with self._changed:
            self.requests[self._mode] += 1
            if self._mode != "hang":
                return self._mode
            self.held += 1
            self._changed.wait_for(lambda: self._stopped or self._mode != "hang")
            self.held -= 1
            return None if self._stopped else self._mode


def _handler(server: LlmServer) -> type[BaseHTTPRequestHandler]:
    """A request handler answering as ``server``'s mode says."""

    class Handler(BaseHTTPRequestHandler):
        timeout = _READ_TIMEOUT_SECONDS

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            if not self.path.endswith("/chat/completions"):
                self._send(404, _error("no such endpoint", "invalid_request_error"))
                return
            mode = server.admit()
            if mode is None:
                return  # stopped while held: the connection closes unanswered
            if mode == "429":
                retry_after = {"retry-after": str(server.retry_after_seconds)}
                self._send(429, _error("rate limited", "rate_limit_exceeded"), retry_after)
            elif mode == "500":
                self._send(500, _error("internal error", "server_error"))
            else:
                self._send(200, completion(request))

        def _send(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up waiting (a held request): nobody to tell

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a soak sends thousands of requests."""

    return Handler


def _error(message: str, code: str) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": code, "code": code}}
