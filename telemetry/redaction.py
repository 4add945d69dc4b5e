"""What must never leave the platform in text: secrets, signed-URL queries, server paths.

``redact`` is for everything written anywhere (log lines, dead-letter headers, stored
error messages): credentials in any known shape, and the query string of every URL,
because a pre-signed URL (S3's ``X-Amz-Signature``, a CDN token) is a credential in
its query. ``public_message`` is for text a customer reads (a failed job's message):
also replaces every absolute file path with its last segment, since a library's error
("Invalid data found when processing input: '/srv/.state/blobs/...'") names the
problem well enough without telling the reader how the server's disk is laid out.
"""

from __future__ import annotations

import re

_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"\bvi_[A-Za-z0-9_-]{8,}"), "vi_[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-[redacted]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_+/=-]{8,}"), "whsec_[redacted]"),
    (re.compile(r"(?i)(://[^:/\s@]+:)[^@\s]+@"), r"\1[redacted]@"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#\"'<>]*)\?[^\s#\"'<>]*"), r"\1?[redacted]"),
    (
        re.compile(r"(?i)((?:api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        r"\1[redacted]",
    ),
)

# An absolute path of two or more segments, or a file:// URI: not inside a URL (the
# character before the first slash is no letter, digit, dot, colon or slash).
_SEGMENT = r"/[^\s/\"'<>,;()]+"
_SERVER_PATH = re.compile(rf"file://(?:{_SEGMENT})+/?|(?<![\w.:/~-])(?:{_SEGMENT}){{2,}}/?")


def redact(text: str) -> str:
    """The text with every known secret shape and every URL query replaced by a marker."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def public_message(text: str) -> str:
    """``redact``ed text with each server path cut to its last segment."""
    return _SERVER_PATH.sub(_last_segment, redact(text))


def _last_segment(match: re.Match[str]) -> str:
    return match.group(0).rstrip("/").rsplit("/", 1)[-1]
