"""The soak suite's tools, each on real sockets: the LLM server through litellm, the proxy
in front of an echo server, the burst against a small HTTP app, the lag monitor on the
session's Kafka."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import litellm
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from inference.extractive import extract_insights
from inference.insight_schema import Insights
from inference.prompts.transcript import Segment, TranscriptText, render_transcript
from tests.faults.burst import fire_burst
from tests.faults.invariants import MESSAGE_PREFIX, i4_logs
from tests.faults.lag import GroupSeries, LagMonitor, Sample, Stall, platform_groups
from tests.faults.llm_server import LlmServer, token_count
from tests.faults.proxy import TcpProxy
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.network import free_port
from tests.fixtures.waiting import wait_until
from vidinsight.settings import Settings

pytestmark = pytest.mark.timeout(30)

TRANSCRIPT = TranscriptText(
    duration_seconds=30.0,
    scene_cuts_seconds=[15.0],
    segments=[
        Segment(0.0, 7.0, "The quarterly budget grew and the marketing budget stayed small."),
        Segment(7.0, 15.0, "Alice will send the budget report to finance by Friday."),
        Segment(15.0, 22.0, "Next, hiring engineers for the platform team is difficult."),
        Segment(22.0, 30.0, "What is the start date for the new engineers?"),
    ],
)
MESSAGES = [
    {"role": "system", "content": "Answer with the insights JSON."},
    {"role": "user", "content": render_transcript(TRANSCRIPT)},
]


def ask(server: LlmServer, timeout: float = 5.0) -> Any:
    """One chat completion through litellm, retries off, as inference/llm.py calls it."""
    return litellm.completion(
        model="openai/soak-model",
        messages=MESSAGES,
        api_base=server.url,
        api_key="x",
        timeout=timeout,
        num_retries=0,
        max_retries=0,
    )


# --- the LLM server


def test_llm_server_answers_the_extractive_insights_the_same_every_time() -> None:
    with LlmServer() as server:
        first, second = ask(server), ask(server)
    expected = extract_insights(TRANSCRIPT)
    assert Insights.model_validate_json(first.choices[0].message.content) == expected
    assert first.choices[0].message.content == second.choices[0].message.content
    prompt = "\n".join(message["content"] for message in MESSAGES)
    assert first.usage.prompt_tokens == token_count(prompt) > 0
    assert first.usage.completion_tokens == token_count(expected.model_dump_json()) > 0
    assert first.usage.model_dump() == second.usage.model_dump()
    assert first.model.endswith("soak-model")
    assert server.requests == {"ok": 2}


def test_llm_server_modes_become_litellm_errors_and_a_hang_its_timeout() -> None:
    threads_before = set(threading.enumerate())
    server = LlmServer(retry_after_seconds=7).start()
    try:
        server.set_mode("429")
        with pytest.raises(litellm.RateLimitError) as limited:
            ask(server)
        # litellm keeps the provider's answer headers in an attribute it does not declare.
        assert vars(limited.value)["litellm_response_headers"]["retry-after"] == "7"
        server.set_mode("500")
        with pytest.raises(litellm.InternalServerError):
            ask(server)
        server.set_mode("hang")
        started = time.monotonic()
        with pytest.raises(litellm.Timeout):
            ask(server, timeout=0.5)
        assert time.monotonic() - started < 3
        assert server.held == 1  # the client left; the request is still held
    finally:
        started = time.monotonic()
        server.stop()  # returns only once every handler thread has ended
    assert time.monotonic() - started < 2
    assert server.held == 0
    left = set(threading.enumerate()) - threads_before
    assert not [t for t in left if "process_request_thread" in t.name or t.name == "llm-server"]
    assert server.requests == {"429": 1, "500": 1, "hang": 1}


def test_llm_server_answers_a_held_request_when_the_mode_changes() -> None:
    with LlmServer() as server:
        server.set_mode("hang")
        answers: list[httpx.Response] = []
        body = {"model": "soak-model", "messages": MESSAGES}
        url = f"{server.url}/chat/completions"
        caller = threading.Thread(target=lambda: answers.append(httpx.post(url, json=body)))
        caller.start()
        wait_until(lambda: server.held == 1, 5, "the request is held")
        server.set_mode("ok")
        caller.join(5)
    assert answers[0].status_code == 200
    assert answers[0].json()["usage"]["prompt_tokens"] == token_count(
        "\n".join(message["content"] for message in MESSAGES)
    )


# --- the proxy


class EchoServer:
    """Sends back whatever it receives, one thread per connection, until closed."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._echo, args=(client,), daemon=True).start()

    @staticmethod
    def _echo(client: socket.socket) -> None:
        with client:
            try:
                while chunk := client.recv(65536):
                    client.sendall(chunk)
            except OSError:
                pass

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def round_trip(client: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read until as many bytes came back (b"" short: the peer closed)."""
    client.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = client.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def closed_by_peer(client: socket.socket) -> bool:
    """Whether the other end closed or reset ``client`` (within its timeout)."""
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def test_proxy_streams_many_connections_and_adds_latency_each_way(echo: EchoServer) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB: several chunks each way
    with TcpProxy(0, echo.port) as proxy:
        clients = [connect(proxy.port) for _ in range(12)]
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda c=c: results.append(round_trip(c, payload)))
            for c in clients
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [payload] * 12
        proxy.set_latency(0.2)
        started = time.monotonic()
        assert round_trip(clients[0], b"ping") == b"ping"
        assert time.monotonic() - started >= 0.4
        assert proxy.connections_accepted == 12
        for client in clients:
            client.close()


def test_proxy_cut_drops_open_connections_refuses_new_ones_then_accepts(echo: EchoServer) -> None:
    with TcpProxy(0, echo.port) as proxy:
        clients = [connect(proxy.port) for _ in range(3)]
        assert [round_trip(c, b"before") for c in clients] == [b"before"] * 3
        proxy.cut(1.0)
        for client in clients:
            assert closed_by_peer(client)
            client.close()
        with pytest.raises(ConnectionRefusedError):
            connect(proxy.port)
        assert proxy.cuts == 1 and proxy.is_cut

        wait_until(lambda: not proxy.is_cut, 5, "the proxy listens again")
        after = connect(proxy.port)
        assert round_trip(after, b"after") == b"after"
        assert proxy.connections_accepted == 4
    assert closed_by_peer(after)  # stop closed it
    after.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.port)


# --- the burst


class FakeGateway:
    """Answers POST /v1/jobs in turn 202, 202, 429 (Retry-After), 503 (none), 500."""

    ANSWERS = (202, 202, 429, 503, 500)

    def __init__(self) -> None:
        self.idempotency_keys: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with fake._lock:
                    index = len(fake.idempotency_keys)
                    fake.idempotency_keys.append(self.headers["Idempotency-Key"])
                status = fake.ANSWERS[index % len(fake.ANSWERS)]
                key = self.headers["Authorization"].removeprefix("Bearer ")
                body = f'{{"job_id": "{key}-{index}"}}'.encode() if status == 202 else b"{}"
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_burst_sends_within_the_window_and_tallies_every_answer() -> None:
    gateway = FakeGateway()
    templates = [
        (f"customer-{n}", f"key{n}", {"source_url": "http://example.test/v.mp4"}) for n in range(3)
    ]
    try:
        tally = fire_burst(gateway.url, templates, total=100, window_seconds=1.0)
    finally:
        gateway.close()
    assert tally.statuses == {202: 40, 429: 20, 503: 20, 500: 20}
    assert (tally.retry_after_present, tally.retry_after_missing) == (20, 20)
    assert tally.other_5xx == 20 and not tally.dropped
    assert len(set(gateway.idempotency_keys)) == 100
    assert len(tally.accepted) == 40
    for customer, job_id in tally.accepted:  # the job came back to whoever submitted it
        assert job_id.startswith(f"key{customer.removeprefix('customer-')}-")
    assert 0.98 <= tally.send_seconds <= 1.5  # the last request started at 99/100 s
    latency = tally.percentiles()
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p100"]
    assert tally.report()["statuses"] == {"202": 40, "429": 20, "500": 20, "503": 20}
    assert tally.problems() == [
        "20 429/503 answers without Retry-After",
        "20 5xx answers other than 503",
    ]


def test_a_burst_split_over_processes_sends_within_one_window_and_merges_its_tally() -> None:
    gateway = FakeGateway()
    templates = [
        (f"customer-{n}", f"key{n}", {"source_url": "http://example.test/v.mp4"}) for n in range(3)
    ]
    try:
        tally = fire_burst(gateway.url, templates, total=100, window_seconds=1.0, processes=2)
    finally:
        gateway.close()
    assert sum(tally.statuses.values()) == 100 and not tally.dropped
    assert len(set(gateway.idempotency_keys)) == 100
    assert len(tally.accepted) == tally.statuses[202] > 0
    for customer, job_id in tally.accepted:
        assert job_id.startswith(f"key{customer.removeprefix('customer-')}-")
    assert tally.send_seconds <= 1.5  # both halves paced over the same second


def test_burst_counts_refused_connections_as_dropped() -> None:
    template = ("customer", "key", {"upload_id": "u1"})
    tally = fire_burst(f"http://127.0.0.1:{free_port()}", [template], 5, window_seconds=0.1)
    assert tally.dropped == {"ClientConnectorError": 5}
    assert not tally.statuses and not tally.latencies
    assert tally.problems() == ["5 requests without an answer: {'ClientConnectorError': 5}"]


# --- the lag monitor


def produce_five(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for n in range(5):
        producer.produce(topic, value=f"m{n}".encode())
    assert producer.flush(10) == 0


def consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> None:
    """Read ``count`` messages of partition 0 as ``group`` (no join: assigned) and commit."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        read = 0
        deadline = time.monotonic() + 10
        while read < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                read += 1
        assert read == count
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


@pytest.mark.integration
def test_lag_monitor_sees_lag_progress_and_a_stall(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("soak-lag")
    working, idle = (f"test.{uuid.uuid4().hex}.{name}" for name in ("working", "idle"))
    monitor = LagMonitor(kafka_bootstrap, 0.2, {working: topic, idle: topic}).start()
    try:
        produce_five(kafka_bootstrap, topic)

        def lag_of(group: str) -> int | None:
            latest = monitor.latest(group)
            return None if latest is None else latest.lag

        wait_until(lambda: lag_of(working) == 5 and lag_of(idle) == 5, 5, "lag 5 in both")

        consume_and_commit(kafka_bootstrap, topic, working, 5)
        wait_until(lambda: lag_of(working) == 0, 5, "the working group drained")
        latest = monitor.latest(working)
        assert latest is not None and latest.committed == 5
        assert not monitor.wait_drained(0.5)  # the idle group still lags

        stall = monitor.longest_stall(idle)
        assert stall is not None
        wait_until(
            lambda: (
                (now := monitor.longest_stall(idle)) is not None and now.seconds > stall.seconds
            ),
            5,
            "the idle group's stall grows",
        )
    finally:
        monitor.stop()
    groups = monitor.summary()["groups"]
    assert groups[working]["peak_lag"] == 5 and groups[working]["lag_at_end"] == 0
    assert groups[idle]["committed_at_end"] == 0 and groups[idle]["gaps"] == 0
    assert groups[idle]["longest_stall_seconds"] > 0
    series = monitor.series(since=monitor.started)
    committed = [c for _, _, c in series[working]]
    assert committed[0] == 0 and committed[-1] == 5
    drained = monitor.time_to_drain_after(monitor.started)
    assert drained[working] is not None and drained[idle] is None


def test_a_gap_is_no_progress_and_moving_offsets_end_a_stall() -> None:
    series = GroupSeries("topic")
    readings = [(0, 3, 10), (1, 3, 10), (2, None, None), (3, 3, 10), (4, 2, 11), (5, 0, 13)]
    for t, lag, committed in readings:
        series.add(Sample(t, lag, committed))
    assert series.longest_stall == Stall(0, 3)  # through the gap at 2, ended by the move at 4
    assert series.peak_lag == 3
    assert series.time_to_drain_after(1.5) == 3.5
    assert series.time_to_drain_after(6) is None


def test_platform_groups_are_the_stage_workers_and_the_cost_aggregator(
    settings: Settings,
) -> None:
    groups = platform_groups(settings)
    assert groups["vi.ingest"] == "vi.jobs.requested"
    assert groups["vi.analyse"] == "vi.transcripts.ready"
    assert groups["vi.preprocess"] == groups["vi.scenes"] == "vi.media.ingested"
    assert groups[settings.costs_app_id] == (settings.costs_input_topic or "vi.costs")
    assert len(groups) == 8  # seven stages and the aggregator


def test_lag_monitor_records_an_unreachable_broker_as_gaps() -> None:
    group = f"test.{uuid.uuid4().hex}.nobroker"
    bootstrap = f"127.0.0.1:{free_port()}"
    monitor = LagMonitor(bootstrap, 0.1, {group: "vi.nothing"}, request_timeout=0.3).start()
    try:
        wait_until(lambda: monitor.summary()["groups"][group]["gaps"] >= 2, 5, "two gaps")
    finally:
        monitor.stop()
    summary = monitor.summary()["groups"][group]
    assert summary["samples"] == summary["gaps"] and summary["longest_stall"] is None


def _log(level: str, msg: str, reason: str | None = None) -> str:
    return json.dumps({"level": level, "msg": msg, "reason": reason})


def test_log_check_counts_the_failures_a_run_survived_by_reason_and_message() -> None:
    """A run that passes deletes its logs: I4 keeps what it recovered from as figures."""
    unconfirmed = "the broker acknowledged a message without an offset; not counted as delivered"
    lines = [
        ("worker-transcribe", _log("warning", unconfirmed, "broker_unavailable")),
        ("worker-analyse", _log("warning", unconfirmed, "broker_unavailable")),
        ("gateway", _log("error", "commit failed: x", "database_unavailable")),
        ("gateway", _log("info", "started")),
    ]
    figures = i4_logs(lines).report()
    assert figures["holds"]
    by_reason = figures["failure_lines_by_reason"]
    assert by_reason == {"broker_unavailable": 2, "database_unavailable": 1}
    assert figures["failure_lines_by_message"][unconfirmed[:MESSAGE_PREFIX]] == 2
    assert "started" not in figures["failure_lines_by_message"]
