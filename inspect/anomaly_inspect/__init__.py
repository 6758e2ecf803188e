"""anomaly-inspect: anomaly inspection for industrial and medical images.

A plain torch/numpy core: dataset adapters (``data``), offline timm backbones
(``features``), scorers with one ``fit``/``score`` interface (``scorers``),
leakage-free evaluation (``evaluation``) and fit-once screening
(``screening``). The command-line interface in ``cli`` is a thin layer over
these modules.

The public API is flat and imported lazily (PEP 562), so ``import
anomaly_inspect`` stays cheap (no torch)::

    from anomaly_inspect import ModelConfig, PatchCore, evaluate, fit, load_model, load_mvtec
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute", relative to this package; imported on first use.
_EXPORTS = {
    # pipeline configuration, data, features
    "ModelConfig": "config:ModelConfig",
    "load_config": "config:load_config",
    "load_mvtec": "data.mvtec:load_mvtec",
    "load_folders": "data.folder:load_folders",
    "load_dataset": "data.registry:load_dataset",
    "available_datasets": "data.registry:available_datasets",
    "Features": "core:Features",
    "FitContext": "core:FitContext",
    "FeatureExtractor": "features.extractor:FeatureExtractor",
    "Runner": "pipeline.runner:Runner",
    "make_engine": "pipeline.engine:make_engine",
    # the scorer interface and every registered scorer
    "Scorer": "scorers.base:Scorer",
    "ScoreResult": "core:ScoreResult",
    "NotFittedError": "scorers.base:NotFittedError",
    "available_scorers": "scorers:available_scorers",
    "build_scorer": "scorers:build_scorer",
    "NuisanceProjection": "scorers.nuisance:NuisanceProjection",
    "ProjectedScorer": "scorers.nuisance:ProjectedScorer",
    # benchmark evaluation and day-to-day screening
    "evaluate": "evaluation.evaluate:evaluate",
    "fit": "screening.model:fit",
    "load_model": "screening.model:load_model",
    "Model": "screening.model:Model",
    "screen": "screening.runner:screen",
    "Explanation": "screening.explain:Explanation",
    "ExplainUnavailable": "screening.explain:ExplainUnavailable",
}

# every registered scorer class, by its class name: registering a scorer exports it
from .scorers import _REGISTRY as _SCORERS  # noqa: E402 - numpy only, no torch

_EXPORTS.update({target.split(":")[1]: f"scorers.{target}" for target in _SCORERS.values()})

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name].split(":")
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

