"""The one shape of an identifier that may name something on disk or in a bucket.

Job, customer and upload ids reach the platform from the gateway and straight from
upstream systems' Kafka messages, and they end up in blob keys (``media/<job_id>/...``)
and therefore in file paths and object names. Only a conservative alphabet is allowed:
letters, digits and ``_ . : -``, starting with a letter or digit, so no id can hold a
slash, a percent escape, a dot-dot segment or a control character, and nothing needs
decoding before it is checked.
"""

from __future__ import annotations

import re

from vidinsight.errors import PermanentError, Reason

MAX_IDENTIFIER_LENGTH = 128
IDENTIFIER = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_IDENTIFIER_LENGTH - 1}}}")


def is_identifier(value: str) -> bool:
    return IDENTIFIER.fullmatch(value) is not None


def check_identifier(kind: str, value: str) -> str:
    """``value`` itself, or PermanentError(invalid_request) naming what is wrong with it."""
    if not is_identifier(value):
        raise PermanentError(
            Reason.INVALID_REQUEST,
            f"{kind} must be 1 to {MAX_IDENTIFIER_LENGTH} letters, digits or '_.:-',"
            " starting with a letter or digit",
        )
    return value
