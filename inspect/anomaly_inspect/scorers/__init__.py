"""Scorers: one interface (``fit`` / ``score``, higher = more anomalous), one file per family."""

from __future__ import annotations

import importlib

from .base import NotFittedError, Scorer, ScoreResult

# method name -> "module:Class"; modules are imported only when used.
_REGISTRY = {
    "patchcore": "patchcore:PatchCore",
    "softpatch": "tailedcore:SoftPatch",
    "tailedcore": "tailedcore:TailedCore",
    # OOD scorers on pooled features (issue 3)
    "feature_norm": "norms:FeatureNorm",
    "block_feature_norm": "norms:BlockFeatureNorm",
    "nan": "norms:NAN",
    "mahalanobis": "distance:Mahalanobis",
    "knn": "distance:KNN",
    "knn_nan": "distance:KNNNANFusion",
    "msp": "classifier_scorers:MSP",
    "energy": "classifier_scorers:Energy",
    "max_logit": "classifier_scorers:MaxLogit",
    "head_nan": "classifier_scorers:HeadNAN",
    "head_feature_norm": "classifier_scorers:HeadFeatureNorm",
    "l2norm": "classifier_scorers:L2NormScore",
    "line": "line:LINe",
    # post-hoc baselines on the same head (issue 18)
    "react": "ood_baselines:ReAct",
    "dice": "ood_baselines:DICE",
    "vim": "ood_baselines:ViM",
    "odin": "ood_baselines:ODIN",
    "odin_feature": "ood_baselines:ODINFeature",
    "patch_mahalanobis": "patch_gaussian:PatchMahalanobis",
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


def scorer_parameters(name: str) -> set[str]:
    """Model parameters (constructor arguments but runtime switches) of scorer ``name``."""
    cls = get_scorer_class(name)
    return set(cls.constructor_params()) - set(cls.runtime_params)


def check_scorer_params(name: str, params: dict, section: str = "scorer") -> None:
    """Raise ``ValueError`` (one line) if ``params`` holds a key that scorer ``name`` does not take."""
    accepted = scorer_parameters(name)
    unknown = sorted(set(params) - accepted)
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        # a scorer's seed comes from the config's top-level seed, never from its section
        listed = ", ".join(sorted(accepted - {"seed"}))
        seed = " (seed: the top-level 'seed')" if "seed" in accepted else ""
        keys_of = f"accepted keys: {listed}" if listed else "it takes no settings"
        raise ValueError(f"{section}: unknown key{'s' if len(unknown) > 1 else ''} {keys} for method "
                         f"'{name}'; {keys_of}{seed}")


def merge_scorer_params(section: dict, methods: list[str], options: dict) -> dict:
    """The config's ``scorer`` section overridden by the command-line options that are set;
    each method later takes the keys its constructor accepts. A key no method accepts is an
    error (a typo would otherwise be ignored silently). With every method (a config that names
    none, :meth:`~anomaly_inspect.config.ModelConfig.check_scorer_keys`): the keys no scorer takes."""
    params = dict(section or {})
    params.update({k: v for k, v in options.items() if v is not None})
    accepted = set().union(*(scorer_parameters(m) for m in methods))
    unknown = sorted(set(params) - accepted)
    if unknown:
        which = "any method" if set(methods) >= set(_REGISTRY) else f"any of {methods}"
        raise ValueError(f"scorer settings {unknown} are not parameters of {which}")
    return params


def build_scorer(name: str, **params) -> Scorer:
    return get_scorer_class(name)(**params)


__all__ = ["NotFittedError", "ScoreResult", "Scorer", "available_scorers", "build_scorer",
           "check_scorer_params", "get_scorer_class", "merge_scorer_params", "scorer_parameters"]
