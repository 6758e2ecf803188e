"""OOD detection metrics with the convention stated once.

Convention (as in "The Invisible Gorilla Effect", CVPR 2026): in-distribution
(ID) images are the *positive* class and a detector accepts an image as ID when
its confidence is high. Our scorers return anomaly scores (higher = more OOD),
so confidence = -score.

* ``auroc``: probability that a random ID image gets a higher confidence than a
  random OOD image (ties count one half). This equals the OOD-positive AUROC of
  the raw anomaly scores, so the number does not depend on the convention.
* ``fpr_at_tpr(q)``: the threshold keeps a fraction >= q of the ID images
  (the ceil(q * n_ID)-th highest ID confidence, no interpolation); FPR is the
  fraction of OOD images accepted as ID, i.e. with confidence >= that threshold
  (an OOD image tied with the threshold counts as accepted). Lower is better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .metrics import auroc, finite_scores, fpr_at_tpr

CONVENTION = (
    "ID = positive class; confidence = -anomaly score; AUROC ties count 1/2; "
    "FPR@TPRq = fraction of OOD images with confidence >= the ceil(q*n_ID)-th highest "
    "ID confidence (no interpolation; ties with the threshold count as accepted)"
)


@dataclass
class OODMetrics:
    auroc: float
    fpr_at_tpr80: float
    fpr_at_tpr95: float
    n_id: int
    n_ood: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check(scores: np.ndarray, what: str) -> np.ndarray:
    """``scores`` as a flat float64 array; refused when empty or not finite."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError(f"OOD metrics need at least one {what} score")
    return finite_scores(scores, f"{what} scores")


def ood_fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float) -> float:
    """FPR (share of OOD accepted as ID) when ``tpr`` of the ID images are accepted."""
    s_id, s_ood = _check(id_scores, "ID"), _check(ood_scores, "OOD")
    labels = np.concatenate([np.ones(s_id.size), np.zeros(s_ood.size)])  # ID positive
    return fpr_at_tpr(labels, -np.concatenate([s_id, s_ood]), tpr)


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> OODMetrics:
    """AUROC and FPR@TPR80/95 from anomaly scores (higher = more OOD)."""
    s_id, s_ood = _check(id_scores, "ID"), _check(ood_scores, "OOD")
    labels = np.concatenate([np.zeros(s_id.size), np.ones(s_ood.size)])  # OOD positive
    return OODMetrics(
        auroc=float(auroc(labels, np.concatenate([s_id, s_ood]))),
        fpr_at_tpr80=ood_fpr_at_tpr(s_id, s_ood, 0.80),
        fpr_at_tpr95=ood_fpr_at_tpr(s_id, s_ood, 0.95),
        n_id=int(s_id.size),
        n_ood=int(s_ood.size),
    )


@dataclass
class Orientation:
    """Which way a score runs for this model, judged on ID-train vs pseudo-OOD images only."""

    pseudo_auroc: float  # AUROC (ID = positive) of the score as published, ID train vs pseudo-OOD
    flipped: bool  # True when pseudo_auroc < 0.5: the score is negated

    @property
    def sign(self) -> float:
        return -1.0 if self.flipped else 1.0

    def to_dict(self) -> dict:
        return {"pseudo_ood_auroc": round(self.pseudo_auroc, 4), "flipped": self.flipped}


def orientation(id_train_scores: np.ndarray, pseudo_ood_scores: np.ndarray) -> Orientation:
    """Keep the published direction unless it ranks pseudo-OOD images above ID-train images.

    No real OOD image and no test label is involved: the decision uses the
    training images and their jigsaw-shuffled versions (``data.pseudo_ood``).
    """
    a = float(ood_metrics(id_train_scores, pseudo_ood_scores).auroc)
    return Orientation(a, a < 0.5)
