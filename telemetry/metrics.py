"""The Prometheus endpoint every process serves on a port of its own."""

from __future__ import annotations

import socket

from prometheus_client import start_http_server


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one) and return the port."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
    start_http_server(port, addr=host)
    return port
