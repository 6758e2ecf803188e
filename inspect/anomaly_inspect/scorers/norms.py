"""Label-free norm scorers on backbone features: feature norm, block feature norm, NAN.

All three read activations only (the pooled embedding; block feature norm: one block's
per-channel norms), no memory bank and no labels; ``fit`` just checks the training
features. Each returns an anomaly score (higher = more OOD), i.e. the negated confidence
of the published method.
"""

from __future__ import annotations

import numpy as np

from ..core import Features, FitContext
from .base import Scorer, ScoreResult
from .params import check_number

EPS = 1e-6


def _as_2d(a: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, prod(...)) float64; the width is explicit, so that N = 0 works too."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), int(np.prod(a.shape[1:])))


def feature_norm(a: np.ndarray, p: float = 2.0) -> np.ndarray:
    """Lp norm of each row of ``a`` (N, ...) -> (N,); the confidence of norm-based OOD."""
    return np.linalg.norm(_as_2d(a), ord=p, axis=1)


def block_feature_norm(maps: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Yu et al. (CVPR 2023): ReLU, per-channel L2 over H x W, mean over channels.

    ``maps``: (N, H, W, C) channels-last block outputs -> (N,) confidences. ``valid`` (N, H, W):
    the cells on the image; the others (padding) are left out of the L2, so that each image's
    norm is that of its own map.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"block feature norm needs (N, H, W, C) maps, got shape {maps.shape}")
    active = np.maximum(maps, 0.0)
    if valid is not None:
        if np.shape(valid) != maps.shape[:3]:
            raise ValueError(f"block feature norm: valid mask of shape {np.shape(valid)} for maps "
                             f"of shape {maps.shape}")
        active *= np.asarray(valid, dtype=bool)[..., None]
    per_channel = np.sqrt((active ** 2).sum(axis=(1, 2)))  # (N, C)
    return per_channel.mean(axis=1)


def nan_confidence(a: np.ndarray) -> np.ndarray:
    """Negative-aware norm (Park et al., ICCV 2023): ||a||_1 / ||a||_0.

    ||a||_0 counts the active units (a_i > 0), with the reference implementation's ``+ 1e-6``
    in the denominator: an all-zero vector gives 0, but one with negative units and no
    positive one gives ||a||_1 / 1e-6, a very high confidence. Post-ReLU features (the
    published use) have no negative units.
    """
    a = _as_2d(a)
    active = (a > 0).sum(axis=1)
    return np.abs(a).sum(axis=1) / (active + EPS)


class _Stateless(Scorer):
    """Scorers with no fitted state: ``fit`` only validates the input."""

    requires = ("pooled",)

    def _input(self, features: Features) -> np.ndarray:
        field = self.requires[0]
        arr = getattr(features, field)
        if arr is None:
            raise ValueError(f"{self.name} needs '{field}' features, but they were not extracted")
        return arr

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> _Stateless:
        if len(self._input(features)) == 0:
            raise ValueError(f"{self.name}: no training features")
        self._fitted = True
        return self

    def get_state(self) -> dict[str, np.ndarray]:
        return {"fitted": np.ones(1, np.uint8)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._fitted = True


class FeatureNorm(_Stateless):
    """Score = -||pooled||_p (default p = 2): in-distribution images have larger norms."""

    name = "feature_norm"

    def __init__(self, p: float = 2.0):
        check_number(self.name, "p", p, 0, low_open=True)
        self.p = p

    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        return ScoreResult((-feature_norm(self._input(features), self.p)).astype(np.float32))


class BlockFeatureNorm(_Stateless):
    """Score = -block feature norm (Yu et al.) of one backbone block: the mean over channels of
    the per-channel L2 norms of its ReLU'd map, which the extractor computes
    (``Features.blocks``, over every cell). ``block``: ``"final"`` (the map before global
    pooling, the published choice) or the stage index of one of the backbone's ``layers``
    (``"3"``). Fit, evaluate, screen and ood-benchmark all read these norms, so that each
    computes the same quantity (it once read the PatchCore patch embedding here)."""

    name = "block_feature_norm"
    requires = ("blocks",)

    def __init__(self, block: str = "final"):
        if not (isinstance(block, str) and (block == "final" or block.isdigit())):
            raise ValueError(f"{self.name}: block must be 'final' or a stage index such as '3' "
                             f"(a string), got {block!r}")
        self.block = block

    def _input(self, features: Features) -> np.ndarray:
        blocks = features.blocks or {}
        if self.block not in blocks:
            have = f"only blocks {sorted(blocks)} were" if blocks else "no block norms were"
            raise ValueError(f"{self.name} needs the norms of block '{self.block}', but {have} "
                             f"extracted")
        return blocks[self.block]

    def check_input(self, features: Features, stage: str) -> None:
        """The base check (NaN / Inf, the width of the fit) on the chosen block's norms: the
        base reads array fields, and ``blocks`` is a mapping of them."""
        norms = (features.blocks or {}).get(self.block)
        if norms is None:
            return  # _input says why
        what = f"block '{self.block}'"
        bad = ~np.isfinite(np.asarray(norms, dtype=np.float64)).all(axis=1)
        if bad.any():
            raise ValueError(f"{type(self).__name__}.{stage}: {what} features of {int(bad.sum())} of "
                             f"{len(norms)} images hold NaN or Inf values")
        fitted = (getattr(self, "_input_widths", None) or {}).get("blocks")
        if stage == "score" and fitted is not None and fitted != norms.shape[-1]:
            raise ValueError(f"{type(self).__name__}.score: {what} features have width "
                             f"{norms.shape[-1]}, the scorer was fitted on width {fitted}")

    def _widths(self, features: Features) -> dict[str, int]:
        norms = (features.blocks or {}).get(self.block)
        return {} if norms is None else {"blocks": int(norms.shape[-1])}

    def get_state(self) -> dict[str, np.ndarray]:
        # "reads_blocks" tells this scorer's state from one saved when it read patch embeddings
        return {"fitted": np.ones(1, np.uint8), "reads_blocks": np.ones(1, np.uint8)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if "reads_blocks" not in state:
            raise ValueError("saved by a version whose block_feature_norm scored the PatchCore "
                             "patch embedding, not a backbone block; re-fit the model")
        self._fitted = True

    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        norms = np.asarray(self._input(features), dtype=np.float64)  # (N, C), >= 0
        return ScoreResult((-norms.mean(axis=1)).astype(np.float32))


class NAN(_Stateless):
    """Score = -NAN(pooled): label-free, bank-free, hyper-parameter free."""

    name = "nan"

    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        return ScoreResult((-nan_confidence(self._input(features))).astype(np.float32))
