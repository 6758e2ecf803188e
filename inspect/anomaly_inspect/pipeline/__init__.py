"""The pipeline: build backbone / extractor / scorer from a config, and the engines that run
the per-batch work.

Names are imported on first use (PEP 562), so that ``pipeline.ray_engine`` loads without
torch: Ray starts its helper processes (the byte reader of ``--no-shared-storage``) from it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "build": "builders", "build_backbone": "builders", "build_extractor": "builders",
    "BatchTask": "engine", "Engine": "engine", "LocalEngine": "engine", "make_engine": "engine",
    "BatchScores": "runner", "Extracted": "runner", "Runner": "runner", "score_batches": "runner",
}

__all__ = ["BatchScores", "BatchTask", "Engine", "Extracted", "LocalEngine", "Runner", "build",
           "build_backbone", "build_extractor", "make_engine", "score_batches"]

if TYPE_CHECKING:
    from .builders import build, build_backbone, build_extractor
    from .engine import BatchTask, Engine, LocalEngine, make_engine
    from .runner import BatchScores, Extracted, Runner, score_batches


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

