"""Pricing: one file per provider, model and unit; litellm's bundled map for other LLMs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inference.pricing import DEFAULT_PRICING_FILE, load_pricing
from vidinsight.errors import PermanentError
from vidinsight.settings import REPO_ROOT


def test_configured_prices_give_exact_integer_micro_dollars() -> None:
    book = load_pricing(DEFAULT_PRICING_FILE)
    # gpt-4o-mini: 0.15 / 0.075 / 0.6 micro-dollars per token.
    usage = {"input_tokens": 1_000_001, "cached_tokens": 3, "output_tokens": 7}
    assert book.cost_usd_micros("openai", "gpt-4o-mini", usage) == 150_005  # 150000.15+.225+4.2
    assert book.cost_usd_micros("openai", "whisper-1", {"audio_seconds": 60}) == 6_000
    cost = book.cost_usd_micros("openai", "whisper-1", {"audio_seconds": 90.5})
    assert isinstance(cost, int) and cost == 9_050


def test_a_million_tiny_charges_do_not_drift() -> None:
    book = load_pricing(DEFAULT_PRICING_FILE)
    one = book.cost_usd_micros("openai", "gpt-4o-mini", {"input_tokens": 10})  # 1.5 -> 2
    assert one == 2
    assert sum(one for _ in range(1_000_000)) == 2_000_000


def test_litellm_map_prices_models_the_file_does_not_list(tmp_path: Path) -> None:
    empty = tmp_path / "pricing.toml"
    empty.write_text("")
    price = load_pricing(empty).price("openai", "gpt-4o-mini")
    assert price.source == "litellm"
    assert load_pricing(empty).cost_usd_micros("openai", "gpt-4o-mini", {"input_tokens": 1e6}) == (
        150_000
    )


def test_the_file_overrides_litellm(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text('[providers.openai."gpt-4o-mini"]\ninput_tokens = "1"\noutput_tokens = "2"\n')
    book = load_pricing(path)
    usage = {"input_tokens": 10, "output_tokens": 1}
    assert book.cost_usd_micros("openai", "gpt-4o-mini", usage) == 12
    assert book.cost_usd_micros("openai", "gpt-4o-mini", {"input_tokens": 10}) == 10


def test_unknown_models_and_unpriced_units_are_refused_not_billed_as_free() -> None:
    book = load_pricing(DEFAULT_PRICING_FILE)
    with pytest.raises(PermanentError, match="no price"):
        book.price("openai", "no-such-model-xyz")
    with pytest.raises(PermanentError, match="no audio_seconds price"):
        book.cost_usd_micros("local", "extractive", {"audio_seconds": 3})


@pytest.mark.parametrize(
    "body",
    [
        "[providers.p.m]\ninput_tokens = 0.15\n",  # a float, not a decimal string
        '[providers.p.m]\ntokens = "1"\n',  # not a unit
        '[providers.local.m]\ncompute_seconds = "12"\n',  # measured time: never a price
        '[providers.p.m]\ninput_tokens = "-1"\n',
    ],
)
def test_malformed_prices_are_rejected_at_load(tmp_path: Path, body: str) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(body)
    with pytest.raises(ValueError):
        load_pricing(path)


def test_loading_prices_neither_imports_litellm_nor_allows_its_network_fetch() -> None:
    code = (
        "import os, sys\n"
        "from inference.pricing import load_pricing\n"
        "load_pricing().price('openai', 'gpt-4o')\n"
        "print('litellm' in sys.modules, os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
