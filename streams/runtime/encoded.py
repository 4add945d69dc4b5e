"""A message ready for the wire, and its JSON form for the stage-run record.

Outputs are stored already encoded, so re-emitting them on a redelivery sends
exactly the bytes (and headers) of the first run, whatever changed since.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def _header_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@dataclass(frozen=True)
class Encoded:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "key": _b64(self.key),
            "value": _b64(self.value),
            "headers": [[name, _b64(_header_bytes(value))] for name, value in self.headers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Encoded:
        return cls(
            topic=data["topic"],
            key=_unb64(data["key"]),
            value=_unb64(data["value"]),
            headers=[(name, _unb64(value) or b"") for name, value in data["headers"]],
        )
