"""The bad inputs mixed into the soak batch, and how each must end.

Each ``BadCase`` is one job a careless or hostile customer could submit (a file that is
not a video, one that lies about its length, a URL into our own network or to a server
that never answers, a webhook receiver that never answers, a job cancelled halfway);
each names the end the platform owes it: ``failed`` with a reason code from
``vidinsight.errors`` (and the stage that failed it), ``completed``, ``cancelled``, or
``refused`` by the gateway before any job exists (an empty upload: 422 empty_media).
The jobs around them must complete.

Messages that never came through the gateway are injected straight onto the pipeline
topics (bytes that are not the Confluent wire format, and a wire-format header naming a
schema id the registry does not have): the stage reading each topic must dead-letter
them (``streams/runtime/dead_letter.py``: the ``vi-original-*`` headers say where each
came from) and go on with the partition.

The files come from the tests' own generators (``tests/fixtures/media.py``, and the
soak batch's ``talk``), made for the duration limit given.

How the harness uses it::

    injected = inject_garbage(bootstrap, garbage_topics())  # before the batch
    with SilentServer() as silent:
        cases = make_cases(folder, max_duration, silent.url)
        for case in cases:
            try:
                job_id = submit_case(case, client)
            except Refused as refused:
                problem = check_case(case, refused)
            if case.cancel:
                cancel_when_running(client, job_id, timeout)  # AssertionError if missed
        ...  # poll each job until settled(case, job), then
        problem = check_case(case, job, job_deliveries(conn, job_id))
    letters = dead_lettered(bootstrap, injected, timeout)  # every stage's letter found
    assert not blocking(bootstrap, injected)
"""

from __future__ import annotations

import contextlib
import math
import mimetypes
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.runtime.dead_letter import header_map
from tests.faults.batch import talk
from tests.fixtures.media import (
    HOSTILE_VERSION,
    LYING_LONG_SECONDS,
    LYING_SECONDS,
    GeneratedMedia,
    HostileMedia,
    generate,
    generate_hostile,
    recipe_hash,
    tiny_media,
)
from topics.catalogue import STAGES
from vidinsight.errors import Reason

FAILED, COMPLETED, CANCELLED = "failed", "completed", "cancelled"
# Not a job status: the gateway refused the submission, so no job exists.
REFUSED = "refused"
ENDED = frozenset({FAILED, COMPLETED, CANCELLED})
# Addresses the SSRF guard must refuse even where loopback is allowed for tests.
PRIVATE_URL = "http://10.0.0.1/video.mp4"
METADATA_URL = "http://169.254.169.254/latest/meta-data/video.mp4"
# How far past the duration limit the too-long file runs: more than the probe's error.
OVER_LIMIT_SECONDS = 3
# The talk cancelled halfway, as a share of the limit: long, so that most of the pipeline
# is still ahead of it when ingest is done, yet a good video.
CANCEL_TALK_SHARE = 0.75
# Not the Confluent wire format: its first byte is not the magic byte 0.
GARBAGE = b"this is not an Avro message in the Confluent wire format"
# A schema id no registry of ours has handed out (they count up from 1).
UNKNOWN_SCHEMA_ID = 987_654_321
UNKNOWN_SCHEMA = b"\x00" + struct.pack(">I", UNKNOWN_SCHEMA_ID) + b"junk after a valid header"
POLL_SECONDS = 0.1

# (topic, partition, offset) of one injected message.
Position = tuple[str, int, int]


@dataclass(frozen=True)
class BadCase:
    """One bad job and the end it must reach (``REFUSED``: the gateway answers the
    submission with a 4xx carrying ``expect_reason``, and no job is made).

    The job is ``upload`` (a file, uploaded as a customer does) or ``source_url``;
    ``webhook_url`` asks for a webhook; ``cancel`` asks the harness to cancel the job
    once it has passed ingest (``cancel_when_running``). ``expect_delivery_error``: every
    webhook attempt must fail with this reason code (the job still completes).
    """

    name: str
    expect_status: str
    expect_reason: str | None = None
    expect_stage: str | None = None
    upload: Path | None = None
    source_url: str | None = None
    webhook_url: str | None = None
    cancel: bool = False
    expect_delivery_error: str | None = None


@dataclass(frozen=True)
class CaseFiles:
    """The files the cases upload."""

    generated: GeneratedMedia  # its small extras: empty, text, truncated, short, audio only
    hostile: HostileMedia  # the files that lie about their length
    too_long: Path  # just over the duration limit
    long_talk: Path  # a good talk well under the limit: the job cancelled halfway


def case_files(folder: Path, max_duration_seconds: float) -> CaseFiles:
    """Build the files under ``folder`` with the tests' own generators (each is made once
    and reused by later calls)."""
    return CaseFiles(
        generated=generate(folder / f"generated-{recipe_hash()}"),
        hostile=generate_hostile(folder / f"hostile-{HOSTILE_VERSION}"),
        too_long=tiny_media(folder, math.ceil(max_duration_seconds) + OVER_LIMIT_SECONDS),
        long_talk=talk(folder, int(max_duration_seconds * CANCEL_TALK_SHARE)),
    )


def make_cases(
    folder: Path, max_duration_seconds: float, never_answering_url: str
) -> list[BadCase]:
    """Every bad case, for a platform run with ``VI_MAX_DURATION_SECONDS`` =
    ``max_duration_seconds``, its files made in ``folder`` (once).

    ``never_answering_url`` is a ``SilentServer``'s: the source that never answers and
    the webhook receiver that never answers.
    """
    return cases_for(
        case_files(folder, max_duration_seconds), max_duration_seconds, never_answering_url
    )


def cases_for(
    files: CaseFiles, max_duration_seconds: float, never_answering_url: str
) -> list[BadCase]:
    """The cases over ``files`` (see ``make_cases``).

    The never-answering source fails ``source_unreachable`` only when the platform's
    ``VI_FETCH_TIMEOUT_SECONDS`` is below ingest's deadline (``VI_STAGE_DEADLINE_BASE_
    SECONDS`` for ingest; both are 600 s by default): otherwise the deadline ends the
    fetch first, and the job fails ``stage_timeout`` after ``VI_UNKNOWN_ERROR_MAX_ATTEMPTS``
    deadlines. Every webhook attempt to the silent receiver fails ``timeout`` only when
    ``VI_WEBHOOK_MAX_ATTEMPTS`` attempts of ``VI_WEBHOOK_TIMEOUT_SECONDS`` and their
    backoff fit in notify's deadline (else the last is recorded ``stage_timeout``).
    """
    media = files.generated
    lying = lying_file(files.hostile, max_duration_seconds)
    return [
        # The gateway refuses an empty upload (422) before any job exists.
        BadCase("empty", REFUSED, Reason.EMPTY_MEDIA.value, upload=media.file("empty.mp4")),
        _rejected("text_named_mp4", Reason.NOT_MEDIA, upload=media.file("notes.mp4")),
        _rejected("truncated_mp4", Reason.CORRUPT_MEDIA, upload=media.file("truncated.mp4")),
        _rejected("too_long", Reason.TOO_LONG, upload=files.too_long),
        _rejected("lying_duration", Reason.TOO_LONG, upload=lying),
        _rejected("private_address", Reason.SOURCE_FORBIDDEN, source_url=PRIVATE_URL),
        _rejected("metadata_address", Reason.SOURCE_FORBIDDEN, source_url=METADATA_URL),
        _rejected("never_answering_url", Reason.SOURCE_UNREACHABLE, source_url=never_answering_url),
        BadCase("audio_only", COMPLETED, upload=media.file("audio_only.m4a")),
        BadCase(
            "never_answering_webhook",
            COMPLETED,
            upload=media.file("short.mp4"),
            webhook_url=never_answering_url,
            expect_delivery_error=Reason.TIMEOUT.value,
        ),
        BadCase("cancelled_halfway", CANCELLED, upload=files.long_talk, cancel=True),
    ]


def _rejected(
    name: str, reason: Reason, upload: Path | None = None, source_url: str | None = None
) -> BadCase:
    """A job ingest must refuse with ``reason``."""
    return BadCase(name, FAILED, reason.value, "ingest", upload=upload, source_url=source_url)


def lying_file(hostile: HostileMedia, max_duration_seconds: float) -> Path:
    """The shortest hostile file that declares one second and plays past the limit."""
    for seconds, name in ((LYING_SECONDS, "lying.mkv"), (LYING_LONG_SECONDS, "lying_6h.mkv")):
        if seconds > max_duration_seconds + OVER_LIMIT_SECONDS:
            return hostile.file(name)
    raise ValueError(f"no lying file plays longer than {max_duration_seconds} s")


class Refused(Exception):
    """The gateway refused a submission with a client error: no job exists."""

    def __init__(self, status_code: int, reason: str, message: str) -> None:
        super().__init__(f"{status_code} {reason}: {message}")
        self.status_code = status_code
        self.reason = reason


def submit_case(case: BadCase, client: httpx.Client) -> str:
    """Upload the case's file (if any) and submit its job, as a customer does; the job id.

    ``client`` is a customer's: the gateway's base URL and its API key. Raises
    ``Refused`` when the gateway answers 4xx (pass it to ``check_case`` as the outcome),
    ``httpx.HTTPStatusError`` for a 5xx.
    """
    request: dict[str, Any] = {}
    if case.upload is not None:
        kind = mimetypes.guess_type(case.upload.name)[0] or "application/octet-stream"
        upload = client.post(
            "/v1/uploads", content=case.upload.read_bytes(), headers={"Content-Type": kind}
        )
        request["upload_id"] = _accepted(upload)["upload_id"]
    else:
        request["source_url"] = case.source_url
    if case.webhook_url is not None:
        request["webhook_url"] = case.webhook_url
    return str(_accepted(client.post("/v1/jobs", json=request))["job_id"])


def _accepted(answer: httpx.Response) -> dict[str, Any]:
    """The body of a 2xx answer; ``Refused`` for a 4xx in the API's error shape."""
    if answer.is_client_error:
        error = answer.json().get("error") or {}
        raise Refused(answer.status_code, str(error.get("reason")), str(error.get("message")))
    return dict(answer.raise_for_status().json())


def cancel_when_running(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """Cancel the job (DELETE /v1/jobs/{id}) as soon as ingest has succeeded; the job as
    the cancel left it. AssertionError if the job ended first, never passed ingest
    within ``timeout`` seconds, or the gateway refused the cancel.

    Polled, not waited for a fixed time: ingest's success is the first moment the job is
    running past ingest, so the rest of the pipeline is still ahead of it.
    """
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ENDED:
            raise AssertionError(f"job {job_id} ended {job['status']} before it was cancelled")
        if job["stages"].get("ingest", {}).get("status") == "succeeded":
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} had not passed ingest after {timeout} s: {job}")
        time.sleep(POLL_SECONDS)
    answer = client.delete(f"/v1/jobs/{job_id}")
    if answer.status_code != 200 or answer.json()["status"] != CANCELLED:
        raise AssertionError(
            f"cancelling job {job_id} answered {answer.status_code}: {answer.text}"
        )
    return dict(answer.json())


def settled(case: BadCase, job: Mapping[str, Any]) -> bool:
    """Whether the job (GET /v1/jobs/{id}) is ready for ``check_case``: it has ended, and
    a job with a webhook has had notify finish (give up or deliver) its announcement."""
    if job["status"] not in ENDED:
        return False
    if case.webhook_url is None:
        return True
    return job["stages"].get("notify", {}).get("status") in ("succeeded", "failed")


def check_case(
    case: BadCase, job: Mapping[str, Any] | Refused, deliveries: Sequence[Mapping[str, Any]] = ()
) -> str | None:
    """None if the job (GET /v1/jobs/{id}, or the ``Refused`` its submission raised)
    ended as the case expects, else what is wrong.

    ``deliveries``: the job's ``webhook_deliveries`` rows (``sinks.deliveries.
    job_deliveries``), needed for a case with ``expect_delivery_error``; notify records
    every attempt there (the API does not show them).
    """
    if isinstance(job, Refused):
        ended: tuple[str, str | None, str | None] = (REFUSED, job.reason, None)
        job = {"refused": str(job)}
    else:
        error = job.get("error") or {}
        ended = (job["status"], error.get("reason"), error.get("stage"))
    wanted = (case.expect_status, case.expect_reason, case.expect_stage or ended[2])
    if ended != wanted:
        return f"{case.name}: ended {ended} (status, reason, stage), expected {wanted}: {job}"
    if case.expect_delivery_error is None:
        return None
    if not deliveries:
        return f"{case.name}: no webhook attempt was recorded"
    prefix = f"{case.expect_delivery_error}:"
    wrong = [
        (row["attempt"], row["status_code"], row["error"])
        for row in deliveries
        if row["status_code"] is not None or not str(row["error"] or "").startswith(prefix)
    ]
    if wrong:
        return f"{case.name}: webhook attempts not failed {prefix} (attempt, status, error) {wrong}"
    return None


class SilentServer:
    """A TCP server on loopback that accepts every connection and never answers.

    Connections are held open (not read, not closed) until the server stops, so only
    the client's own time bound ends a request to it. ``connections`` counts those
    accepted: proof that a client got through the connect and waited for an answer.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/silent/video.mp4"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with self._lock:
                self._held.append(client)

    def stop(self) -> None:
        """Stop accepting and close every held connection."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for client in self._held:
                client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def garbage_topics() -> list[str]:
    """The input topic of every stage (notify's included): where garbage can arrive."""
    return list(dict.fromkeys(wiring.input_topic for wiring in STAGES.values()))


def stages_reading(topic: str) -> list[str]:
    """The stages whose input is ``topic`` (each in its own group: the branches after
    ingest share theirs); ValueError for a topic no stage reads."""
    readers = [stage for stage, wiring in STAGES.items() if wiring.input_topic == topic]
    if not readers:
        raise ValueError(f"no stage reads {topic}")
    return readers


def inject_garbage(bootstrap: str, topics: Sequence[str]) -> list[Position]:
    """Write a garbage message and an unknown-schema message to every partition of each
    topic; where each landed.

    Every partition, because a message that blocked its partition would stop only the
    jobs keyed there: with one in each, every good job after it passes one.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    landed: list[Position] = []
    errors: list[str] = []

    def delivered(err: object, message: Message) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            landed.append((str(message.topic()), int(message.partition() or 0), _offset(message)))

    for topic in topics:
        for partition in producer.list_topics(topic, timeout=30).topics[topic].partitions:
            for kind, value in (("garbage", GARBAGE), ("unknown-schema", UNKNOWN_SCHEMA)):
                key = f"{kind}-{uuid.uuid4().hex[:12]}"
                producer.produce(topic, value, key, partition, on_delivery=delivered)
    left = producer.flush(30)
    if left or errors:
        raise RuntimeError(f"{left} injected message(s) not delivered; errors: {errors}")
    return sorted(landed)


def _offset(message: Message) -> int:
    offset = message.offset()
    if offset is None:
        raise ValueError("a delivered message without an offset")
    return offset


# An injected message as one stage must handle it: each stage reading its topic dead-letters it.
Letter = tuple[Position, str]


def expected_letters(injected: Sequence[Position]) -> list[Letter]:
    """Every (injected message, stage reading its topic) pair."""
    return [(position, stage) for position in injected for stage in stages_reading(position[0])]


def dead_lettered(
    bootstrap: str, injected: Sequence[Position], timeout: float
) -> dict[Letter, dict[str, str]]:
    """The ``vi-*`` headers of the dead letter of each injected message in the DLQ of each
    stage reading its topic, found by their ``vi-original-*`` headers; a letter still
    missing after ``timeout`` seconds is absent from the answer."""
    wanted = set(expected_letters(injected))
    stage_of_dlq = {STAGES[stage].dlq_topic: stage for _, stage in wanted}
    found: dict[Letter, dict[str, str]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for message in read_to_end(bootstrap, sorted(stage_of_dlq)):
            headers = header_map(message.headers())
            position = (
                headers.get("vi-original-topic", ""),
                int(headers.get("vi-original-partition") or -1),
                int(headers.get("vi-original-offset") or -1),
            )
            letter = (position, stage_of_dlq[str(message.topic())])
            if letter in wanted:
                found[letter] = headers
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found
        time.sleep(POLL_SECONDS * 5)


def blocking(bootstrap: str, injected: Sequence[Position]) -> list[Letter]:
    """The injected messages a stage reading their topic has not committed past yet:
    empty once no partition is held up by one of them."""
    behind: list[Letter] = []
    letters = expected_letters(injected)
    for stage in sorted({stage for _, stage in letters}):
        mine = [position for position, reader in letters if reader == stage]
        # The catalogue stages' group (Stage.consumer_group). Only asks the coordinator;
        # never subscribes, so the group does not rebalance.
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vi.{stage}"})
        try:
            committed = consumer.committed(
                [TopicPartition(topic, partition) for topic, partition, _ in mine], timeout=30
            )
        finally:
            consumer.close()
        next_offset = {(tp.topic, tp.partition): tp.offset for tp in committed}
        behind += [(p, stage) for p in mine if next_offset[(p[0], p[1])] <= p[2]]
    return behind


def read_to_end(bootstrap: str, topics: Sequence[str]) -> Iterator[Message]:
    """Every message of ``topics`` from the start to the end they have now, no group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test.bad-inputs.{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        assignment = []
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=30
                )
                if high > low:
                    ends[(topic, partition)] = high
                    assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        while ends:
            message = consumer.poll(10)
            if message is None:
                raise TimeoutError(f"{sorted(ends)} not read to their end within 10 s")
            if message.error() is not None:
                continue
            place = (str(message.topic()), int(message.partition() or 0))
            if _offset(message) + 1 >= ends.get(place, 0):
                ends.pop(place, None)
            yield message
    finally:
        consumer.close()
