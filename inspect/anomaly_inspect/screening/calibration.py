"""Thresholds at a target false-positive rate from normal images only (split conformal).

Given scores ``c_1..c_n`` of held-out *normal* images (never anomalies, never
test labels), the conformal p-value of a new score ``s`` is

    p(s) = (1 + #{i : c_i >= s}) / (n + 1).

For a new normal image exchangeable with the calibration images,
``P(p(s) <= alpha) <= alpha``. Flagging ``p <= alpha`` is the same as flagging
``s > c_(k)``, the k-th largest calibration score, with ``k = floor(alpha (n+1))``;
its expected false-positive rate (over calibration draws) is exactly ``k / (n+1)``.
For the particular calibration set at hand the FPR is random, distributed as
Beta(k, n + 1 - k); we report its central interval too.

When ``n + 1 < 1 / alpha`` no score can reach the target (k = 0): we fall back to
the largest calibration score (expected FPR ``1 / (n+1)``) and say so loudly.

A p-value needs the calibration scores themselves. Records saved before they were kept
(``scores`` empty) still hold the threshold, so decisions are unchanged, but they have no
p-values: :meth:`Calibration.p_values` gives NaN (``NO_P_VALUE``; an empty ``p_value`` in
``results.csv``), never a made-up 1.0 ("as normal as can be") beside an "anomalous" decision.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..scorers.params import check_number

log = logging.getLogger(__name__)

NO_P_VALUE = float("nan")  # the p-value of a record without calibration scores: none
NO_SCORES = ("this model's calibration record keeps no calibration scores (saved by an older "
             "version), so its p-values are not available; decisions use its threshold as "
             "before; refit the model to get p-values")


@dataclass
class Calibration:
    """A fitted threshold and what it rests on. Decision rule: ``score > threshold``."""

    threshold: float
    target_fpr: float
    expected_fpr: float
    fpr_interval: tuple[float, float]
    interval_level: float
    n_calibration: int
    rank: int  # k: the threshold is the k-th largest calibration score
    target_met: bool
    # e.g. "held-out 12 of 60 training images (calibration fraction 0.2, seed 0)" or
    # "calibration images from DIR"
    source: str
    scores: list[float] = field(default_factory=list)  # the reference scores, ascending

    @property
    def has_p_values(self) -> bool:
        """Whether the record keeps the calibration scores a p-value is computed from."""
        return bool(self.scores)

    def p_values(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Conformal p-values of ``scores``; all ``NO_P_VALUE`` (NaN) for a record without
        calibration scores (:attr:`has_p_values`)."""
        if not self.has_p_values:
            return np.full(np.shape(scores), NO_P_VALUE, np.float64)
        return conformal_p_values(np.asarray(self.scores, np.float64), scores)

    def decide(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Boolean array: True = flagged as anomalous."""
        return np.asarray(scores, np.float64) > self.threshold

    def summary(self) -> str:
        lo, hi = self.fpr_interval
        text = (
            f"threshold {self.threshold:.4g} = rank {self.rank} from the top of {self.n_calibration} "
            f"normal calibration scores ({self.source}); expected FPR {self.expected_fpr:.2%} "
            f"(target {self.target_fpr:.2%}; {self.interval_level:.0%} interval for this "
            f"calibration set {lo:.2%}-{hi:.2%})"
        )
        if not self.has_p_values:
            text += "; no p-values (record without calibration scores: refit to get them)"
        if not self.target_met:
            text += (f"; TARGET NOT REACHABLE: needs at least {min_calibration_size(self.target_fpr)} "
                     f"calibration images")
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fpr_interval"] = list(self.fpr_interval)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        from ..config import check_field_types

        d = dict(d)
        d["fpr_interval"] = tuple(d["fpr_interval"])
        cal = cls(**d)
        check_field_types(cal, "calibration: ")  # a hand-edited value fails here, not mid-run
        ref = cal.scores
        if ref and not (len(ref) == cal.n_calibration and 1 <= cal.rank <= len(ref)
                        and all(a <= b for a, b in zip(ref, ref[1:], strict=False))
                        and cal.threshold == ref[len(ref) - cal.rank]):
            raise ValueError("calibration: threshold, rank, n_calibration and scores disagree "
                             f"(threshold {cal.threshold}, rank {cal.rank} of "
                             f"{cal.n_calibration}, {len(ref)} scores): edited by hand?")
        return cal


def conformal_p_values(calibration: np.ndarray, scores: np.ndarray | Sequence[float]) -> np.ndarray:
    """(1 + #{cal >= s}) / (n + 1) for each s (NaN for a NaN score: it ranks nowhere);
    vectorised with a sorted search. No calibration scores is an error: there is no p-value
    to give (1 / (0 + 1) = 1.0 would say "normal" whatever the score)."""
    cal = np.sort(np.asarray(calibration, np.float64))
    if cal.size == 0:
        raise ValueError("a conformal p-value needs at least one calibration score, got none")
    s = np.asarray(scores, np.float64)
    n_ge = cal.size - np.searchsorted(cal, s, side="left")
    return np.where(np.isnan(s), np.nan, (1.0 + n_ge) / (cal.size + 1.0))


def min_calibration_size(target_fpr: float) -> int:
    """Smallest n with floor(target_fpr * (n + 1)) >= 1."""
    return max(1, math.ceil(1.0 / target_fpr - 1e-12) - 1)


def check_target_fpr(owner: str, target_fpr: float) -> None:
    """Refuse a ``target_fpr`` that is not a number in (0, 1), naming ``owner``."""
    check_number(owner, "target_fpr", target_fpr, 0, 1, low_open=True, high_open=True)


def calibrate(
    scores: np.ndarray | Sequence[float],
    target_fpr: float = 0.01,
    source: str = "calibration images",
    interval_level: float = 0.9,
) -> Calibration:
    """Threshold at ``target_fpr`` from normal-only calibration scores."""
    check_target_fpr("calibrate", target_fpr)
    cal = np.sort(np.asarray(scores, np.float64))
    if cal.size == 0:
        raise ValueError("calibration needs at least one normal image score")
    if not np.all(np.isfinite(cal)):
        raise ValueError("calibration scores contain NaN or infinite values")
    n = cal.size
    k = math.floor(target_fpr * (n + 1) + 1e-9)
    met = k >= 1
    if not met:
        log.warning(
            "only %d calibration images: the target FPR %.2g%% needs at least %d; using the "
            "largest calibration score (expected FPR %.2g%%)",
            n, 100 * target_fpr, min_calibration_size(target_fpr), 100 / (n + 1),
        )
        k = 1
    threshold = float(cal[n - k])  # k-th largest
    expected = k / (n + 1)
    lo, hi = _beta_interval(k, n + 1 - k, interval_level)
    return Calibration(
        threshold=threshold, target_fpr=float(target_fpr), expected_fpr=float(expected),
        fpr_interval=(lo, hi), interval_level=interval_level, n_calibration=int(n), rank=int(k),
        target_met=met, source=source, scores=[float(v) for v in cal],
    )


def _beta_interval(a: int, b: int, level: float) -> tuple[float, float]:
    from scipy.stats import beta

    tail = (1.0 - level) / 2.0
    return float(beta.ppf(tail, a, b)), float(beta.ppf(1.0 - tail, a, b))


def holdout_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (fit indices, calibration indices), both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"calibration fraction must be in (0, 1), got {fraction}")
    n_cal = int(round(n * fraction))
    if n_cal < 1 or n - n_cal < 1:
        # 1 / n holds out one image; 0.5 leaves at least one to fit on (both need n >= 2)
        share = (f"a larger calibration_fraction (--calibration-fraction, e.g. {1 / n:.2g})"
                 if n_cal < 1 else
                 "a smaller calibration_fraction (--calibration-fraction, e.g. 0.5)")
        raise ValueError(
            f"cannot hold out {fraction:.0%} of {n} training images for calibration "
            f"(need at least one image on each side); "
            + (f"hold out {share}, add images" if n >= 2 else "add images")
            + " or pass calibration=DIR"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])
