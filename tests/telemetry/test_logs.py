"""Log lines are JSON with the job context, and secrets never reach them."""

from __future__ import annotations

import json
import logging

import pytest

from telemetry.logs import JsonFormatter
from telemetry.redaction import public_message, redact


def _format(msg: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("vidinsight.test", logging.WARNING, __file__, 1, msg, (), None)
    for name, value in extra.items():
        setattr(record, name, value)
    return dict(json.loads(JsonFormatter().format(record)))


def test_a_line_about_a_job_carries_its_context() -> None:
    line = _format(
        "handler failed",
        job_id="job-1",
        customer_id="cust-1",
        stage="ingest",
        attempt=2,
        reason="corrupt_media",
    )
    assert line["msg"] == "handler failed"
    assert {k: line[k] for k in ("job_id", "customer_id", "stage", "attempt", "reason")} == {
        "job_id": "job-1",
        "customer_id": "cust-1",
        "stage": "ingest",
        "attempt": 2,
        "reason": "corrupt_media",
    }
    assert line["level"] == "warning"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("key vi_s3cr3tK3yValue123 used", "vi_s3cr3tK3yValue123"),
        ("postgresql://vidinsight:hunter2@db:5432/x", "hunter2"),
        ('{"api_key": "sk-live-123456789"}', "sk-live-123456789"),
        ("password=topsecret", "topsecret"),
        ("GET https://b.s3.amazonaws.com/v.mp4?X-Amz-Signature=f00dfeed1 failed", "f00dfeed1"),
        ("signed by whsec_c2VjcmV0c2VjcmV0", "whsec_c2VjcmV0c2VjcmV0"),
    ],
)
def test_secrets_are_redacted_from_messages_and_fields(text: str, secret: str) -> None:
    assert secret not in redact(text)
    line = _format(text, detail={"nested": text})
    assert secret not in json.dumps(line)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Invalid data found when processing input: '/srv/vi/.state/blobs/uploads/c/u'", "'u'"),
        ("blob file:///srv/vi/.state/blobs/audio/j/00001.wav is missing", "00001.wav is missing"),
        ("https://media.example/a/b.mp4?token=abc answered HTTP 403", "a/b.mp4?[redacted]"),
    ],
)
def test_a_customer_facing_message_names_no_server_path(text: str, shown: str) -> None:
    message = public_message(text)
    assert shown in message and "/srv/" not in message and "abc" not in message
