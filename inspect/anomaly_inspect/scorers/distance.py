"""Distance scorers on pooled features: Mahalanobis (shrinkage covariance), deep kNN, kNN / NAN.

Mahalanobis: one Gaussian of the ID training features (label-free, the
default) or class means with a shared covariance (Lee et al. 2018) when
``class_conditional`` and labels are given; the covariance is Ledoit-Wolf
shrunk so that it is invertible with fewer images than dimensions.
Deep kNN (Sun et al. 2022): distance to the k-th nearest ID training feature,
on L2-normalised features by default (``normalize=False, reduction="mean",
k=20`` gives the un-normalised mean-distance variant of the IGE benchmark).
kNN / NAN (Park et al. 2023, Sec. 6.2): the kNN distance divided by NAN.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from ..core import Features, FitContext
from .base import Scorer, ScoreResult
from .nn_index import NearestNeighbours
from .norms import EPS, nan_confidence
from .params import check_choice, check_flag, check_number


def _pooled(features: Features, who: str) -> np.ndarray:
    if features.pooled is None:
        raise ValueError(f"{who} needs pooled features, but they were not extracted")
    return np.asarray(features.pooled, dtype=np.float64)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


#: total variance (trace of the covariance) below this share of the features' mean squared
#: norm is rounding noise, not spread: features known to ~float32 precision (1e-7) vary less
MIN_RELATIVE_SPREAD = 1e-12


def check_spread(owner: str, cov: np.ndarray, mean_sq_norm: float, around: str = "their mean") -> None:
    """Refuse a training covariance with (numerically) zero trace: the training features do
    not vary (``around`` their mean or class means), so a Mahalanobis distance to them is
    undefined (the pseudo-inverse is 0 and would score every input 0). ``mean_sq_norm``: the
    mean squared norm of the features."""
    total = float(np.trace(cov))
    if not total > MIN_RELATIVE_SPREAD * mean_sq_norm:
        raise ValueError(f"{owner}: the training features do not vary around {around} (total "
                         f"variance {total:.3g}, mean squared norm {mean_sq_norm:.3g}): a "
                         f"Mahalanobis distance needs features with some spread")


class Mahalanobis(Scorer):
    """Score = min over class means of the squared Mahalanobis distance (shrunk covariance)."""

    name = "mahalanobis"
    requires = ("pooled",)

    def __init__(self, class_conditional: bool = False, shrinkage: float | None = None):
        # shrinkage 0 would leave the covariance singular wherever the training features do
        # not vary, and its pseudo-inverse blind there: an input differing only in such a
        # direction would score like a training image
        check_number(self.name, "shrinkage", shrinkage, 0, 1, low_open=True, allowed=(None,))
        check_flag(self.name, "class_conditional", class_conditional)
        self.class_conditional = class_conditional
        self.needs_labels = class_conditional
        self.shrinkage = shrinkage  # None = Ledoit-Wolf estimate, else fixed in (0, 1]
        self.means: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> Mahalanobis:
        x = _pooled(features, self.name)
        if len(x) < 2:
            raise ValueError(f"{self.name}: needs at least 2 training images, got {len(x)}")
        if self.class_conditional:
            if labels is None:
                raise ValueError(f"{self.name}: class_conditional=True needs ID class labels")
            labels = np.asarray(labels)
            if labels.shape != (len(x),):
                raise ValueError(f"{self.name}: class_conditional=True needs one ID class label "
                                 f"per training image, shape ({len(x)},), got labels of shape "
                                 f"{labels.shape}")
            classes = np.unique(labels)
            means = np.stack([x[labels == c].mean(0) for c in classes])
            centred = x - means[np.searchsorted(classes, labels)]
        else:
            means = x.mean(0, keepdims=True)
            centred = x - means
        if self.shrinkage is None:
            cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
        else:
            emp = centred.T @ centred / len(centred)
            mu = np.trace(emp) / emp.shape[0]
            cov = (1 - self.shrinkage) * emp + self.shrinkage * mu * np.eye(emp.shape[0])
        check_spread(self.name, cov, float(np.einsum("nd,nd->", x, x)) / len(x),
                     "their class means" if self.class_conditional else "their mean")
        self.means = means
        self.precision = np.linalg.pinv(cov, hermitian=True)
        self._fitted = True
        return self

    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        x = _pooled(features, self.name)
        # (x - m) P (x - m) as one GEMM and a row sum: einsum's unoptimised three-operand form
        # was 16-18x slower (1,000 images of 1,280 dims: 1.47 -> 0.08 s)
        d = np.stack([((x - m) @ self.precision * (x - m)).sum(1) for m in self.means], axis=1)
        return ScoreResult(d.min(axis=1).astype(np.float32))

    def get_state(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "precision": self.precision}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        shapes = {"means": ("classes", "pooled"), "precision": ("pooled", "pooled")}
        self.check_state(state, shapes, **({} if self.class_conditional else {"classes": 1}))
        self.means, self.precision = state["means"], state["precision"]


class KNN(Scorer):
    """Deep kNN: distance to the k-th nearest (or mean of k nearest) ID training feature."""

    name = "knn"
    requires = ("pooled",)

    def __init__(self, k: int = 5, normalize: bool = True, reduction: str = "kth"):
        check_number(self.name, "k", k, 1, whole=True)
        check_choice(self.name, "reduction", reduction, ("kth", "mean"))
        check_flag(self.name, "normalize", normalize)
        self.k = k
        self.normalize = normalize
        self.reduction = reduction
        self.bank: np.ndarray | None = None
        self._nn: NearestNeighbours | None = None

    def _prep(self, features: Features) -> np.ndarray:
        x = _pooled(features, self.name)
        return (_l2_normalise(x) if self.normalize else x).astype(np.float32)

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> KNN:
        bank = self._prep(features)
        self.check_train_count(len(bank))
        self.bank = bank
        self._nn = NearestNeighbours("flat").fit(bank)
        self._fitted = True
        return self

    def check_train_count(self, n: int) -> None:
        """Refuse fitting on ``n`` training images: the k-th nearest needs at least k (callers
        that know the count before extracting, the OOD benchmark, check it early)."""
        if n < self.k:
            raise ValueError(f"{self.name}: k={self.k} but only {n} training images")

    def distances(self, features: Features) -> np.ndarray:
        self._check_fitted()
        dist, _ = self._nn.search(self._prep(features), self.k)
        return dist[:, -1] if self.reduction == "kth" else dist.mean(axis=1)

    def score(self, features: Features) -> ScoreResult:
        return ScoreResult(self.distances(features).astype(np.float32))

    def get_state(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.check_state(state, {"bank": ("items", "pooled")})
        self.bank = np.ascontiguousarray(state["bank"], dtype=np.float32)
        self._nn = NearestNeighbours("flat").fit(self.bank)


class KNNNANFusion(KNN):
    """Score = kNN distance / NAN(pooled): NAN re-calibrates the distance (Park et al. 2023)."""

    name = "knn_nan"

    def score(self, features: Features) -> ScoreResult:
        nan = nan_confidence(_pooled(features, self.name))
        return ScoreResult((self.distances(features) / (nan + EPS)).astype(np.float32))
