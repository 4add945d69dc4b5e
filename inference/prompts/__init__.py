"""Versioned prompt files: a prompt is changed by adding a new version, never by editing one.

A prompt's version is part of the text sent to the model, and so of the response
cache key: a new version never reuses answers given to the old one.
"""

from __future__ import annotations

from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent


def load_prompt(name: str, version: int) -> str:
    """The text of prompt ``name`` at ``version`` (file ``<name>.v<version>.md``)."""
    path = PROMPTS_DIR / f"{name}.v{version}.md"
    return path.read_text(encoding="utf-8")
