"""Patch-level Mahalanobis: one Gaussian over every ID-training patch, image score = max over patches.

Small artefacts (ink marks) are averaged away by pooled features; scored patch
by patch they stand out. Unlike PaDiM (one Gaussian per position, for aligned
objects) the Gaussian is shared by all positions, since lesions and artefacts
sit anywhere in the image. The covariance is accumulated batch by batch (sums
of x and x x^T in float64), so fitting holds one D x D matrix, not the patches;
it is shrunk towards a scaled identity by ``shrinkage`` (in (0, 1], default 0.01,
fixed a priori as a numerical regulariser) and inverted once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..core import Features, FitContext
from .base import Scorer, ScoreResult
from .distance import check_spread
from .maps import fill_padding
from .params import check_number


class PatchMahalanobis(Scorer):
    """Squared Mahalanobis distance of each patch to the shared patch Gaussian; image = max."""

    name = "patch_mahalanobis"
    requires = ("patches",)

    def __init__(self, shrinkage: float = 0.01, batch_size: int = 64):
        # > 0: unshrunk, a singular covariance's pseudo-inverse is blind to the directions in
        # which no training patch varies (see Mahalanobis)
        check_number(self.name, "shrinkage", shrinkage, 0, 1, low_open=True)
        check_number(self.name, "batch_size", batch_size, 1, whole=True)
        self.shrinkage = shrinkage
        self.batch_size = batch_size
        self.mean: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    @staticmethod
    def _rows(features: Features) -> np.ndarray:
        if features.patches is None:
            raise ValueError("patch_mahalanobis needs patch features")
        p = features.patches
        return (p.reshape(-1, p.shape[-1]) if features.valid is None else p[features.valid]).astype(np.float64)

    def fit_batches(self, batches: Iterable[Features], n_images: int,
                    context: FitContext | None = None) -> PatchMahalanobis:
        n, s, ss = 0, None, None
        for f in batches:
            x = self._rows(f)
            if s is None:
                s, ss = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
            n, s, ss = n + len(x), s + x.sum(0), ss + x.T @ x
        if n < 2:
            raise ValueError(f"patch_mahalanobis: needs at least 2 training patches, got {n}")
        mean = s / n
        cov = ss / n - np.outer(mean, mean)
        check_spread(self.name, cov, float(np.trace(ss)) / n)
        d = len(mean)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / d * np.eye(d)
        self.mean, self.precision = mean, np.linalg.pinv(cov, hermitian=True)
        self._fitted = True
        return self

    def fit(self, features: Features, labels: np.ndarray | None = None,
            context: FitContext | None = None) -> PatchMahalanobis:
        n = len(features)
        return self.fit_batches((features.subset(np.arange(i, min(i + self.batch_size, n)))
                                 for i in range(0, n, self.batch_size)), n)

    def score(self, features: Features) -> ScoreResult:
        self._check_fitted()
        if features.patches is None:
            raise ValueError("patch_mahalanobis needs patch features")
        p = features.patches
        x = p.reshape(-1, p.shape[-1]).astype(np.float32) - self.mean.astype(np.float32)
        m = np.einsum("nd,nd->n", x @ self.precision.astype(np.float32), x).reshape(p.shape[:3])
        valid = features.valid_mask()
        img = np.where(valid, m, -np.inf).max(axis=(1, 2))
        return ScoreResult(img.astype(np.float32), fill_padding(m.astype(np.float32), features.valid))

    def get_state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "precision": self.precision}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.check_state(state, {"mean": ("patches",), "precision": ("patches", "patches")})
        self.mean, self.precision = state["mean"], state["precision"]
