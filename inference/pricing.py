"""Prices per provider, model and unit, and the cost of one use in integer micro-dollars.

One configuration file (``inference/pricing.toml``, or ``VI_PRICING_FILE``) holds every
price; LLM models it does not list fall back to litellm's price map as bundled with the
installed package. That map is read from disk: nothing here touches the network, and
``LITELLM_LOCAL_MODEL_COST_MAP`` is set so that importing litellm later does not either.

Prices are Decimals in micro-dollars per unit; a cost is computed exactly and rounded
once, half up, to whole micro-dollars, so repeated charges never drift the way floats do.

Every unit is a quantity of the work's input (tokens, seconds of audio or media, bytes
stored), never a measured time: the same job must cost the same whether or not it was
retried, and however busy the machine was (docs/decisions/0011).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from vidinsight.errors import PermanentError, Reason
from vidinsight.settings import Settings, get_settings

# Importing litellm without this fetches the price map from the internet, with retries.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEFAULT_PRICING_FILE = Path(__file__).resolve().parent / "pricing.toml"
UNITS = (
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "audio_seconds",
    "media_seconds",
    "storage_bytes",
)
# litellm's USD-per-unit fields, by our unit names.
_LITELLM_FIELDS = {
    "input_tokens": "input_cost_per_token",
    "cached_tokens": "cache_read_input_token_cost",
    "output_tokens": "output_cost_per_token",
    "audio_seconds": "input_cost_per_second",
}
_LITELLM_MAP_FILE = "model_prices_and_context_window_backup.json"
_MICROS_PER_USD = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """Micro-dollars per unit for one provider and model; ``source`` says where it came from."""

    provider: str
    model: str
    micros_per_unit: Mapping[str, Decimal]
    source: str

    def cost_usd_micros(self, usage: Mapping[str, int | float]) -> int:
        """The cost of ``usage`` (units to quantities), rounded half up to whole micro-dollars.

        A unit with a quantity but no price is refused: billing it as free would hide spend.
        """
        total = Decimal(0)
        for unit, quantity in usage.items():
            if not quantity:
                continue
            if unit not in self.micros_per_unit:
                raise PermanentError(
                    Reason.INVALID_REQUEST,
                    f"no {unit} price for {self.provider}/{self.model} ({self.source})",
                )
            total += Decimal(str(quantity)) * self.micros_per_unit[unit]
        return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class PriceBook:
    """The configured prices, with litellm's map as the fallback for LLM models."""

    def __init__(
        self, configured: Mapping[tuple[str, str], ModelPrice], litellm_map: Mapping[str, Any]
    ) -> None:
        self._configured = dict(configured)
        self._litellm = litellm_map

    def price(self, provider: str, model: str) -> ModelPrice:
        """The price of ``provider``/``model``; PermanentError(invalid_request) if none is known."""
        if (provider, model) in self._configured:
            return self._configured[(provider, model)]
        entry = self._litellm_entry(provider, model)
        if entry is None:
            raise PermanentError(
                Reason.INVALID_REQUEST, f"no price for {provider}/{model} in config or litellm"
            )
        prices = {
            unit: Decimal(repr(entry[name])) * _MICROS_PER_USD
            for unit, name in _LITELLM_FIELDS.items()
            if isinstance(entry.get(name), int | float)
        }
        return ModelPrice(provider, model, prices, "litellm")

    def cost_usd_micros(self, provider: str, model: str, usage: Mapping[str, int | float]) -> int:
        """The cost of one use of ``provider``/``model``, in integer micro-dollars."""
        return self.price(provider, model).cost_usd_micros(usage)

    def _litellm_entry(self, provider: str, model: str) -> Mapping[str, Any] | None:
        """litellm names models ``model`` or ``provider/model``; its entry names the provider."""
        for key in (f"{provider}/{model}", model):
            entry = self._litellm.get(key)
            if isinstance(entry, dict) and entry.get("litellm_provider") == provider:
                return entry
        return None


def load_pricing(path: Path | None = None) -> PriceBook:
    """The pricing file's prices (and litellm's bundled map); ValueError for a malformed
    file. Read again only when the file changed: callers ask on every charge."""
    path = path or configured_pricing_file()
    return _read_pricing(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _read_pricing(path: Path, _mtime_ns: int) -> PriceBook:
    """Parse one version of the pricing file (the modification time keys the cache)."""
    with path.open("rb") as f:
        document = tomllib.load(f)
    configured: dict[tuple[str, str], ModelPrice] = {}
    for provider, models in document.get("providers", {}).items():
        for model, units in models.items():
            configured[(provider, model)] = ModelPrice(
                provider, model, _parse_units(path, provider, model, units), str(path)
            )
    return PriceBook(configured, _litellm_price_map())


def configured_pricing_file(settings: Settings | None = None) -> Path:
    """``VI_PRICING_FILE`` of ``settings`` (the process's by default) if set, else the file
    shipped beside this module."""
    return Path((settings or get_settings()).pricing_file or DEFAULT_PRICING_FILE)


def _parse_units(
    path: Path, provider: str, model: str, units: Mapping[str, Any]
) -> dict[str, Decimal]:
    """Validate one model's prices: known units, decimal strings, not negative."""
    prices = {}
    for unit, value in units.items():
        where = f"{path}: {provider}.{model}.{unit}"
        if unit not in UNITS:
            raise ValueError(f"{where}: unknown unit; known: {', '.join(UNITS)}")
        if not isinstance(value, str):
            raise ValueError(f'{where}: write prices as decimal strings, e.g. "0.15"')
        price = Decimal(value)
        if not price.is_finite() or price < 0:
            raise ValueError(f"{where}: not a price: {value!r}")
        prices[unit] = price
    return prices


@lru_cache(maxsize=1)
def _litellm_price_map() -> Mapping[str, Any]:
    """litellm's bundled price map, read from the installed package without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _LITELLM_MAP_FILE
    if not path.exists():
        return {}
    data: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
