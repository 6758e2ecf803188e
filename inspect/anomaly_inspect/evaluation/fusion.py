"""Normal-calibrated score fusion: members' scores standardised by held-out *normal* scores.

Used by tune's ensembles and by the OOD benchmark's fused rows. The statistics come from
cross-fitted scores of normal (ID-train) images, never from test scores: the official PatchCore
ensemble normalises over the test set, which a deployed detector cannot do. Both draw their
folds with :func:`balanced_folds` (the benchmark through :func:`crossfit_folds`, tune's fold
plan from the generator that drew its image subset) and loop over them with :func:`fold_splits`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class NormalCalibration:
    """Median and scaled MAD of one member's scores on held-out normal images."""

    median: float
    mad: float

    @classmethod
    def fit(cls, normal_scores: np.ndarray) -> NormalCalibration:
        s = np.asarray(normal_scores, np.float64)
        if not s.size or not np.isfinite(s).all():
            raise ValueError(f"normal calibration needs finite scores of held-out normal images, "
                             f"got {s.size} score(s), {int((~np.isfinite(s)).sum())} not finite")
        med = float(np.median(s))
        mad = 1.4826 * float(np.median(np.abs(s - med)))
        if not mad > 0:  # constant scores: fall back to the spread, then to 1
            mad = float(s.std()) or 1.0
        return cls(med, mad)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, np.float64) - self.median) / self.mad

    def to_dict(self) -> dict:
        return asdict(self)


def balanced_folds(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced fold index (0 .. folds-1) of each of ``n`` items, dealt in the order of one
    permutation drawn from ``rng``: the one draw of :func:`crossfit_folds` and of tune's fold
    plan (its folds, then its anomaly families, from the generator that drew its subset)."""
    out = np.empty(n, np.int64)
    out[rng.permutation(n)] = np.arange(n) % folds
    return out


def crossfit_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Seeded balanced fold index (0 .. folds-1) of each of ``n`` images."""
    if not 2 <= folds <= n:
        raise ValueError(f"cross-fitting needs 2 <= folds <= {n} images, got {folds}")
    return balanced_folds(n, folds, np.random.default_rng(seed))


def fold_splits(fold: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(fold, bank, held) for each fold present in ``fold``, in increasing order: ``held`` the
    indices in the fold, ``bank`` the others (each ascending). The loop of
    :func:`crossfit_scores` and of tune's validation and normal calibration."""
    for k in np.unique(fold):
        yield int(k), np.flatnonzero(fold != k), np.flatnonzero(fold == k)


def crossfit_scores(fold: np.ndarray, fit_score: Callable[[np.ndarray, np.ndarray], np.ndarray]
                    ) -> np.ndarray:
    """Each image's score from a model fitted without its fold: ``fit_score(bank, held)`` fits
    on the ``bank`` indices and returns the scores of the ``held`` ones."""
    out = np.empty(len(fold), np.float64)
    for _, bank, held in fold_splits(fold):
        out[held] = fit_score(bank, held)
    return out


def fuse(member_scores: list[np.ndarray], calibrations: list[NormalCalibration]) -> np.ndarray:
    """Mean of the members' normal-standardised scores."""
    if len(member_scores) != len(calibrations) or not member_scores:
        raise ValueError("need one calibration per member and at least one member")
    return np.mean([cal(s) for s, cal in zip(member_scores, calibrations, strict=True)], axis=0)
