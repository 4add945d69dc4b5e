"""Exponential backoff with jitter, so retrying workers do not stampede a recovering dependency."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, initial: float, maximum: float) -> float:
    """Delay before retry ``attempt`` (1-based): half the capped exponential plus a random half."""
    ceiling = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)
