"""``vidinsight gateway``: serve the REST ingestion gateway with uvicorn.

The API on ``--port`` (VI_GATEWAY_PORT); Prometheus metrics on a listener of their own,
VI_METRICS_HOST:VI_METRICS_PORT (0 picks a free port, logged at start-up).
"""

from __future__ import annotations

import argparse

import uvicorn

from gateway.app import create_app
from telemetry.logs import configure
from vidinsight.settings import get_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("gateway", help="serve the REST API until SIGTERM")
    parser.add_argument("--host", help="address to bind (default VI_GATEWAY_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default VI_GATEWAY_PORT, 8000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.gateway_host,
        port=args.port or settings.gateway_port,
        log_config=None,
        access_log=False,
    )
    return 0
