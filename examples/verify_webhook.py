"""Verify a vidinsight webhook before trusting it: standard library only.

Give ``verify`` your webhook secret (``whsec_...``), the request's headers and its raw
body (the bytes as received, before any JSON parsing). It returns True only for a
delivery signed with that secret within the last five minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 5 * 60


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """True if one of the delivery's signatures is ``secret``'s and its timestamp is fresh."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        delivery_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        return False  # a replay of an old delivery (or a clock far off)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected.encode(), given.encode()) for given in signatures)
