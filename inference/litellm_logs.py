"""litellm's log lines as this process's JSON lines (invariant I4).

Importing litellm gives its loggers a plain-text stderr handler of their own, so each of
their lines came out twice: once as text, once through the root's JSON handler; and on
every provider error it prints a "Give Feedback / Get Help" banner to stdout.
``inference.extractive``, which every module using litellm imports, calls
``route_litellm_logs`` right after its own import of litellm: the root's JSON handler
alone remains, and the banner is off (the error itself is logged and raised).
"""

from __future__ import annotations

import logging

import litellm

LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def route_litellm_logs() -> None:
    """Drop litellm's own handlers (its records still reach the root's) and its banner."""
    litellm.suppress_debug_info = True
    for name in LITELLM_LOGGERS:
        logging.getLogger(name).handlers.clear()
