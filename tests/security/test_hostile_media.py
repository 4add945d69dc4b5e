"""Hostile media uploaded through the gateway of the running platform, as a customer can.

Each file understates what it holds: a container that declares one second and holds
over six hours, a picture of 36 megapixels, a stream whose headers say 160x90 and
whose frames then grow to 36 megapixels. What the attacker gets: a failed job with the
reason code of the limit it broke, at the stage that measured it, and a message that
names the problem without a server path.
"""

from __future__ import annotations

import pytest

from tests.fixtures.media import HUGE_PICTURE, HostileMedia
from tests.fixtures.platform import Platform

SERVER_PATHS = ("/work", ".state", "/tmp")
SIX_HOURS = 6 * 3600
HUGE = "{}x{}".format(*HUGE_PICTURE)


@pytest.mark.parametrize(
    ("name", "stage", "reason", "says"),
    [
        ("lying_6h.mkv", "ingest", "too_long",
         (f"longer than the maximum of {SIX_HOURS} s", "1.0 s declared")),
        ("huge_picture.mkv", "ingest", "picture_too_large", (f"picture is {HUGE}",)),
        ("resolution_switch.ts", "scenes", "picture_too_large", (f"picture is {HUGE}",)),
    ],
)  # fmt: skip
def test_media_over_a_limit_fails_its_job_with_the_reason(
    platform: Platform,
    hostile_media: HostileMedia,
    name: str,
    stage: str,
    reason: str,
    says: tuple[str, ...],
) -> None:
    _, api_key = platform.new_customer(f"hostile-media-{name}")
    job_id = platform.submit(hostile_media.file(name), api_key=api_key)
    job = platform.wait(job_id, api_key=api_key)
    assert job["status"] == "failed", job
    error = job["error"]
    assert (error["stage"], error["reason"]) == (stage, reason), error
    assert all(phrase in error["message"] for phrase in says), error
    assert not any(path in error["message"] for path in SERVER_PATHS), error
