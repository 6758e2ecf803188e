"""Scorers: one interface (``fit`` / ``score``, higher = more anomalous), one file per family."""

from __future__ import annotations

import importlib

from .base import NotFittedError, Scorer, ScoreResult

# method name -> "module:Class"; modules are imported only when used.
_REGISTRY = {
    "patchcore": "patchcore:PatchCore",
    "softpatch": "tailedcore:SoftPatch",
    "tailedcore": "tailedcore:TailedCore",
}


def available_scorers() -> list[str]:
    return sorted(_REGISTRY)


def get_scorer_class(name: str) -> type[Scorer]:
    """The scorer class registered under ``name``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method '{name}'; available: {', '.join(available_scorers())}"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def build_scorer(name: str, **params) -> Scorer:
    return get_scorer_class(name)(**params)


__all__ = ["NotFittedError", "ScoreResult", "Scorer", "available_scorers", "build_scorer",
           "get_scorer_class"]
