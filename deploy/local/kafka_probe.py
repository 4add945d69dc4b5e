"""Is the local Kafka broker serving? Exit 0 if it answers a Metadata request listing a broker.

Standard library only, so the stack script can run it before any project package is
installed. It speaks the Kafka wire protocol directly: one Metadata v8 request (a
non-flexible version that Kafka 4.x still serves), and checks that the answer lists at
least one broker, which KRaft does only once the broker is registered and unfenced.

Usage: python3 kafka_probe.py HOST PORT [TIMEOUT_SECONDS]
"""

from __future__ import annotations

import socket
import struct
import sys

METADATA_API_KEY = 3
METADATA_API_VERSION = 8
CORRELATION_ID = 7
CLIENT_ID = b"vidinsight-stack-probe"


def metadata_request() -> bytes:
    """A framed Metadata v8 request for all topics (request header v1)."""
    header = (
        struct.pack(">hhih", METADATA_API_KEY, METADATA_API_VERSION, CORRELATION_ID, len(CLIENT_ID))
        + CLIENT_ID
    )
    # topics = null (all), allow_auto_topic_creation, include cluster/topic authorized ops.
    body = struct.pack(">ibbb", -1, 0, 0, 0)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_exactly(sock: socket.socket, count: int) -> bytes:
    """Read exactly ``count`` bytes or raise ConnectionError."""
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.extend(chunk)
    return bytes(chunks)


def broker_count(host: str, port: int, timeout_seconds: float) -> int:
    """The number of brokers the Metadata answer lists."""
    with socket.create_connection((host, port), timeout=timeout_seconds) as sock:
        sock.settimeout(timeout_seconds)
        sock.sendall(metadata_request())
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        response = read_exactly(sock, size)
    correlation_id, _throttle_ms, brokers = struct.unpack(">iii", response[:12])
    if correlation_id != CORRELATION_ID:
        raise ConnectionError(f"unexpected correlation id {correlation_id}")
    return brokers


def main(argv: list[str]) -> int:
    host, port = argv[1], int(argv[2])
    timeout_seconds = float(argv[3]) if len(argv) > 3 else 3.0
    try:
        count = broker_count(host, port, timeout_seconds)
    except (OSError, struct.error) as exc:
        print(f"kafka not serving on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    if count < 1:
        print(f"kafka on {host}:{port} lists no registered broker yet", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
