"""Where each pipeline stage is defined: stage name -> ``module:attribute`` of its Stage.

A worker imports only the stage it runs, so a transcribe worker never loads the
gateway or the LLM stack. A stage appears here once its module exists.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from streams.runtime.stage import Stage

STAGE_REFS: dict[str, str] = {
    "ingest": "streams.ingest:STAGE",
    "preprocess": "streams.preprocess:STAGE",
    "scenes": "streams.scenes:STAGE",
    "transcribe": "streams.transcribe:STAGE",
    "analyse": "streams.analyse:STAGE",
    "synthesise": "streams.synthesise:STAGE",
    "notify": "streams.notify:STAGE",
}


def load_stage(ref: str) -> Stage:
    """The Stage at ``module:attribute``; the attribute may be a Stage or a factory of one."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"stage reference {ref!r} is not of the form module:attribute")
    target: Stage | Callable[[], Stage] = getattr(importlib.import_module(module_name), attribute)
    stage = target if isinstance(target, Stage) else target()
    if not isinstance(stage, Stage):
        raise TypeError(f"{ref} is not a Stage")
    return stage


def stage_named(name: str) -> Stage:
    """The pipeline stage called ``name``."""
    if name not in STAGE_REFS:
        known = ", ".join(sorted(STAGE_REFS)) or "none yet"
        raise KeyError(f"no stage named {name!r} (built stages: {known})")
    return load_stage(STAGE_REFS[name])
