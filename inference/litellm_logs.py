"""litellm's log lines as this process's JSON lines (invariant I4).

Importing litellm gives its loggers a plain-text stderr handler of their own, so each of
their lines came out twice: once as text, once through the root's JSON handler. Every
module that imports litellm calls ``route_litellm_logs`` right after, leaving the root's.
"""

from __future__ import annotations

import logging

LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def route_litellm_logs() -> None:
    """Drop litellm's own handlers; its records still reach the root's (propagation)."""
    for name in LITELLM_LOGGERS:
        logging.getLogger(name).handlers.clear()
