"""Rank aggregation and the keep-the-default rule (tune's ensembles fuse with :mod:`..evaluation.fusion`).

* :func:`trimmed_borda`: each judge (a fold x anomaly family) ranks the candidates by its AUROC;
  a candidate's Borda points from a judge are the number of candidates it beats (ties: half a
  point each); its score is the trimmed mean of its points over judges (the ``trim`` share of
  highest and lowest judges dropped), so one odd fold or family cannot decide alone.
* :func:`beats_default`: a winner replaces the default only if its mean gain over the default
  across folds exceeds the fold-to-fold standard deviation of that gain (:func:`fold_gain`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def borda_points(scores: np.ndarray) -> np.ndarray:
    """(n_judges, n_candidates) scores -> points: how many candidates each beats (ties 0.5)."""
    s = np.asarray(scores, np.float64)
    greater = (s[:, :, None] > s[:, None, :]).sum(axis=2)
    ties = (s[:, :, None] == s[:, None, :]).sum(axis=2) - 1
    return greater + 0.5 * ties


def trimmed_borda(scores: np.ndarray, trim: float = 0.1) -> np.ndarray:
    """Trimmed-mean Borda score of each candidate (higher = better), from (n_judges, n_candidates)."""
    points = np.sort(borda_points(scores), axis=0)
    k = int(np.floor(trim * points.shape[0]))
    if 2 * k >= points.shape[0]:
        k = (points.shape[0] - 1) // 2
    return points[k:points.shape[0] - k].mean(axis=0)


@dataclass(frozen=True)
class Decision:
    """Which candidate the selector keeps, and why."""

    chosen: int
    winner: int
    default: int
    margin: float  # winner's mean gain over the default across folds (AUROC)
    noise: float  # the fold-to-fold standard deviation of that gain
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def fold_gain(fold_scores: np.ndarray, cand: int, default: int) -> tuple[float, float]:
    """Mean gain of candidate ``cand`` over ``default`` across folds and its fold-to-fold standard
    deviation (inf with one fold). ``fold_scores``: (n_folds, n_candidates)."""
    s = np.asarray(fold_scores, np.float64)
    gain = s[:, cand] - s[:, default]
    return float(gain.mean()), float(gain.std(ddof=1)) if len(gain) > 1 else float("inf")


def beats_default(fold_scores: np.ndarray, borda: np.ndarray, default: int = 0) -> Decision:
    """Keep ``default`` unless the Borda winner's mean gain over it across folds exceeds the
    fold-to-fold standard deviation of that gain. ``fold_scores``: (n_folds, n_candidates).
    The winner is the default where it ties for the top Borda score, else the first of the
    tied candidates."""
    borda = np.asarray(borda, np.float64)
    top = np.flatnonzero(borda == borda.max())
    winner = default if default in top else int(top[0])
    if winner == default:
        return Decision(default, winner, default, 0.0, 0.0, "the default ranks first")
    margin, noise = fold_gain(fold_scores, winner, default)
    if margin > noise:
        return Decision(winner, winner, default, margin, noise,
                        f"winner gains {margin:.4f} > fold-to-fold noise {noise:.4f}")
    return Decision(default, winner, default, margin, noise,
                    f"winner gains {margin:.4f} <= fold-to-fold noise {noise:.4f}: default kept")
