"""The soak's bad cases judge job endings as they should, and their tools work alone:
the silent server holds a request until the client gives up, the injected messages are
what the codec refuses. (The platform's answers to the cases are the soak's business.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.codec import schema_id_of
from tests.faults.bad_inputs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    GARBAGE,
    REFUSED,
    UNKNOWN_SCHEMA,
    UNKNOWN_SCHEMA_ID,
    BadCase,
    CaseFiles,
    Refused,
    SilentServer,
    cases_for,
    check_case,
    garbage_topics,
    lying_file,
    settled,
    stages_reading,
)
from tests.fixtures.media import GeneratedMedia, HostileMedia, SpeechTruth
from topics.catalogue import STAGES
from vidinsight.errors import PermanentError, Reason

REJECTED = BadCase("empty", FAILED, "empty_media", "ingest", upload=Path("empty.mp4"))
WEBHOOK = BadCase(
    "hook",
    COMPLETED,
    upload=Path("short.mp4"),
    webhook_url="http://x/",
    expect_delivery_error="timeout",
)


def job(
    status: str, reason: str | None = None, stage: str | None = None, **stages: str
) -> dict[str, Any]:
    """A GET /v1/jobs/{id} body with what the checks read."""
    error = None if reason is None else {"reason": reason, "message": "...", "stage": stage}
    return {
        "status": status,
        "error": error,
        "stages": {name: {"status": state} for name, state in stages.items()},
    }


def test_a_failed_job_must_carry_the_expected_reason_and_stage() -> None:
    assert check_case(REJECTED, job(FAILED, "empty_media", "ingest")) is None
    for wrong in (
        job(COMPLETED),
        job(FAILED, "corrupt_media", "ingest"),
        job(FAILED, "empty_media", "preprocess"),
        job(FAILED),
    ):
        problem = check_case(REJECTED, wrong)
        assert problem is not None and problem.startswith("empty:"), wrong


def test_a_refused_submission_is_judged_by_its_reason() -> None:
    empty = BadCase("empty", REFUSED, "empty_media", upload=Path("empty.mp4"))
    assert check_case(empty, Refused(422, "empty_media", "the upload is empty")) is None
    assert check_case(empty, Refused(413, "too_large", "over the cap")) is not None
    assert check_case(empty, job(FAILED, "empty_media", "ingest")) is not None
    assert check_case(REJECTED, Refused(422, "empty_media", "the upload is empty")) is not None


def test_a_completed_or_cancelled_job_must_carry_no_error() -> None:
    cancelled = BadCase("cancel", CANCELLED, upload=Path("talk.mp4"), cancel=True)
    assert check_case(cancelled, job(CANCELLED)) is None
    assert check_case(cancelled, job(COMPLETED)) is not None
    assert check_case(cancelled, job(CANCELLED, "unexpected_error", "analyse")) is not None


def delivery(attempt: int, status_code: int | None, error: str | None) -> dict[str, Any]:
    return {"attempt": attempt, "status_code": status_code, "error": error}


def test_a_webhook_case_needs_every_attempt_failed_with_its_reason() -> None:
    ended = job(COMPLETED, notify="succeeded")
    timeouts = [delivery(n, None, "timeout: no complete answer within 2 s") for n in (1, 2, 3)]
    assert check_case(WEBHOOK, ended, timeouts) is None
    assert check_case(WEBHOOK, ended, []) == "hook: no webhook attempt was recorded"
    for last in (
        delivery(4, 204, None),
        delivery(4, None, "stage_timeout: the deadline passed before the answer ended"),
        delivery(4, None, "ConnectError: refused"),
    ):
        assert check_case(WEBHOOK, ended, [*timeouts, last]) is not None, last


def test_a_webhook_case_is_settled_only_once_notify_has_finished() -> None:
    assert not settled(REJECTED, job("running"))
    assert settled(REJECTED, job(FAILED, "empty_media", "ingest"))
    assert not settled(WEBHOOK, job(COMPLETED))
    assert not settled(WEBHOOK, job(COMPLETED, notify="running"))
    assert settled(WEBHOOK, job(COMPLETED, notify="succeeded"))


def test_the_lying_file_is_the_shortest_that_plays_past_the_limit(tmp_path: Path) -> None:
    hostile = HostileMedia(tmp_path)
    assert lying_file(hostile, 10).name == "lying.mkv"
    assert lying_file(hostile, 60).name == "lying_6h.mkv"
    with pytest.raises(ValueError):
        lying_file(hostile, 7 * 3600)


def test_every_case_has_one_source_and_a_catalogue_reason(tmp_path: Path) -> None:
    media = GeneratedMedia(
        tmp_path, tmp_path / "s.wav", SpeechTruth("", []), tmp_path / "t.mp4", [], 1
    )
    files = CaseFiles(media, HostileMedia(tmp_path), tmp_path / "long.mp4", tmp_path / "talk.mp4")
    cases = cases_for(files, 5, "http://127.0.0.1:9/x")
    assert len({case.name for case in cases}) == len(cases)
    for case in cases:
        assert (case.upload is None) != (case.source_url is None), case
        assert (case.expect_reason is not None) == (case.expect_status in (FAILED, REFUSED)), case
        for reason in (case.expect_reason, case.expect_delivery_error):
            assert reason is None or Reason(reason), case


def test_the_injected_messages_are_what_the_codec_refuses_or_looks_up() -> None:
    with pytest.raises(PermanentError) as caught:
        schema_id_of(GARBAGE)
    assert caught.value.reason is Reason.UNDECODABLE_MESSAGE
    assert schema_id_of(UNKNOWN_SCHEMA) == UNKNOWN_SCHEMA_ID


def test_garbage_goes_to_the_input_topic_of_every_stage() -> None:
    """Each stage must dead-letter it (the harness adds vi.costs, which the aggregator
    skips and counts, checked by its lag)."""
    topics = garbage_topics()
    assert len(topics) == len(set(topics))  # each topic once, however many stages read it
    assert set(topics) == {wiring.input_topic for wiring in STAGES.values()}
    assert stages_reading("vi.media.ingested") == ["preprocess", "scenes"]


def test_the_silent_server_holds_a_request_until_the_client_gives_up() -> None:
    with SilentServer() as silent:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(silent.url, timeout=httpx.Timeout(0.3, connect=5))
        assert silent.connections == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(silent.url, timeout=5)
