"""Money at the API's edge: integer micro-dollars inside, USD numbers in responses."""

from __future__ import annotations

MICROS_PER_USD = 1_000_000


def usd(amount_usd_micros: int) -> float:
    """Micro-dollars as a USD amount (exact to the micro-dollar for any realistic sum)."""
    return round(amount_usd_micros / MICROS_PER_USD, 6)
