"""Nuisance projection (Anthony et al., CVPR 2026): remove colour-sensitive feature directions.

The subspace is learned from ID *training* images only: each training image is
paired with a colour-shifted copy of itself (``data.colour_shift``), the
principal directions of the ID training features are ranked by how far the
colour change moves the features along them (mean squared displacement), and
the top ``k`` span U. Features are then replaced by F' = (I - U U^T) F before
any scorer fits or scores. ``k = 5`` is the paper's value, fixed before any
result was seen (not tuned on OOD data). No OOD image and no label is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import Features, FitContext
from .base import (
    Scorer,
    ScoreResult,
    ScorerFormatError,
    check_shapes,
    read_saved_json,
    read_saved_state,
    save_state,
)

FORMAT_VERSION = 1
#: the shapes of a saved projection's arrays (:func:`~.base.check_shapes`)
STATE_SHAPES: dict[str, tuple] = {"basis": ("pooled", "k"), "displacement": ("k",),
                                  "variance": ("k",), "rank": ("k",)}


@dataclass
class NuisanceProjection:
    """F' = F - (F U) U^T for an orthonormal (D, k) basis U of nuisance directions."""

    basis: np.ndarray  # (D, k), orthonormal columns
    displacement: np.ndarray  # (k,) mean squared displacement along each removed direction
    variance: np.ndarray  # (k,) ID-training variance along each removed direction
    rank: np.ndarray  # (k,) the removed directions' ranks by ID-training variance (0 = largest)
    nuisance: str = "colour"

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.shape[-1] != self.basis.shape[0]:
            raise ValueError(f"nuisance projection: features have dim {x.shape[-1]}, "
                             f"the projection {self.basis.shape[0]}")
        return (x - (x @ self.basis) @ self.basis.T).astype(np.float32)

    def describe(self) -> dict:
        return {"nuisance": self.nuisance, "k": self.k,
                "variance_ranks": self.rank.tolist(),
                "mean_sq_displacement": [round(float(v), 4) for v in self.displacement],
                "variance": [round(float(v), 4) for v in self.variance]}

    def to_state(self) -> dict[str, np.ndarray]:
        return {"basis": self.basis, "displacement": self.displacement, "variance": self.variance,
                "rank": self.rank.astype(np.int64)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], nuisance: str = "colour",
                   widths: dict[str, int] | None = None) -> NuisanceProjection:
        """The saved projection, its arrays' shapes checked first (``widths``: the feature
        widths the scorer behind it was fitted on, whose "pooled" the basis must have)."""
        check_shapes(state, STATE_SHAPES, widths)
        return cls(state["basis"], state["displacement"], state["variance"], state["rank"], nuisance)


def nuisance_subspace(original: np.ndarray, shifted: np.ndarray, k: int = 5,
                      nuisance: str = "colour") -> NuisanceProjection:
    """Top-``k`` principal directions of ``original`` (N, D) ranked by the mean squared
    displacement ``shifted - original`` along them (row i of ``shifted`` is image i changed)."""
    x = np.asarray(original, np.float64)
    y = np.asarray(shifted, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"nuisance subspace: need paired (N, D) arrays, got {x.shape} and {y.shape}")
    if k < 1:
        raise ValueError(f"nuisance subspace: k must be >= 1, got {k}")
    centred = x - x.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    keep = sing > sing[0] * 1e-10 if len(sing) else sing > 0  # drop the null directions
    v, var = vt[keep].T, sing[keep] ** 2 / len(x)  # (D, r), descending variance
    if k > v.shape[1]:
        raise ValueError(f"nuisance subspace: k={k} but the training features span only "
                         f"{v.shape[1]} directions")
    disp = (((y - x) @ v) ** 2).mean(axis=0)
    top = np.argsort(-disp, kind="stable")[:k]
    return NuisanceProjection(v[:, top], disp[top], var[top], top, nuisance)


class ProjectedScorer:
    """A pooled-feature scorer (any, incl. the classifier-head ones) behind a nuisance projection.

    ``fit`` / ``score`` project ``Features.pooled`` first; ``save`` writes the inner scorer
    (its usual format) to ``dir/scorer`` and the projection to ``dir/projection.*``.
    """

    def __init__(self, scorer: Scorer, projection: NuisanceProjection):
        if "pooled" not in scorer.requires or "patches" in scorer.requires:
            raise ValueError(f"nuisance projection: '{scorer.name}' does not score pooled features")
        self.scorer = scorer
        self.projection = projection

    @property
    def name(self) -> str:
        return self.scorer.name

    @property
    def is_fitted(self) -> bool:
        return self.scorer.is_fitted

    def _project(self, features: Features) -> Features:
        if features.pooled is None:
            raise ValueError(f"{self.name} with a nuisance projection needs pooled features")
        return Features(pooled=self.projection.apply(features.pooled))

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> ProjectedScorer:
        self.scorer.fit(self._project(features), labels, context)
        return self

    def fit_summary(self) -> dict:
        return self.scorer.fit_summary()

    def score(self, features: Features) -> ScoreResult:
        return self.scorer.score(self._project(features))

    def save(self, directory: Path | str) -> None:
        directory = Path(directory)
        self.scorer.save(directory / "scorer")
        save_state({k: np.ascontiguousarray(v) for k, v in self.projection.to_state().items()},
                   directory / "projection.safetensors")
        meta = {"format_version": FORMAT_VERSION, **self.projection.describe()}
        (directory / "projection.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path | str, **runtime) -> ProjectedScorer:
        directory = Path(directory)
        meta_path, state_path = directory / "projection.json", directory / "projection.safetensors"
        if not meta_path.is_file() or not state_path.is_file():
            raise FileNotFoundError(f"{directory}: no saved nuisance projection "
                                    "(projection.json + projection.safetensors)")
        meta = read_saved_json(meta_path, "projection")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ScorerFormatError(f"{meta_path}: projection format version "
                                    f"{meta.get('format_version')} is not supported (this version "
                                    f"reads {FORMAT_VERSION})")
        if not isinstance(meta.get("nuisance"), str):
            raise ScorerFormatError(f"{meta_path}: no nuisance name (the key 'nuisance', a string)")
        scorer = Scorer.load(directory / "scorer", **runtime)
        state = read_saved_state(state_path, "projection")
        try:
            projection = NuisanceProjection.from_state(state, meta["nuisance"],
                                                       getattr(scorer, "_input_widths", None))
        except ValueError as exc:
            raise ScorerFormatError(f"{state_path}: does not match the scorer saved beside it "
                                    f"({exc})") from None
        return cls(scorer, projection)
