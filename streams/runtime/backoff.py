"""Exponential backoff with jitter, so retrying workers do not stampede a recovering dependency."""

from __future__ import annotations

import math
import random


def backoff_seconds(attempt: int, initial: float, maximum: float) -> float:
    """Delay before retry ``attempt`` (1-based): half the capped exponential plus a random half.

    The exponent stops growing once the cap is reached, so retry 5,000 of a long outage
    waits the cap instead of overflowing a float.
    """
    doublings = 0
    if 0 < initial < maximum:
        doublings = min(max(0, attempt - 1), math.ceil(math.log2(maximum / initial)))
    ceiling = min(maximum, initial * (2**doublings))
    return random.uniform(ceiling / 2, ceiling)
