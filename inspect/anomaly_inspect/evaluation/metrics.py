"""Detection metrics. Convention: label 1 = anomalous / OOD = positive; higher score = more anomalous."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _checked(labels, scores, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels as bool, scores), flattened, after refusing what would give a wrong number
    without an error: other shapes (a mask and a map in another layout), labels other than
    0 / 1, and scores that are not finite (NaN ranked as the most anomalous)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"{what}: labels of shape {labels.shape} and scores of shape "
                         f"{scores.shape}; they must match")
    if labels.dtype != bool and not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"{what}: labels must be 0 / 1 (1 = anomalous), got "
                         f"{np.unique(labels)[:5].tolist()}")
    return labels.ravel().astype(bool), finite_scores(scores, what).ravel()


def finite_scores(scores: np.ndarray, what: str) -> np.ndarray:
    """``scores`` after refusing NaN or infinite values (NaN would rank as the most anomalous)."""
    if not np.isfinite(scores).all():
        raise ValueError(f"{what}: {int((~np.isfinite(scores)).sum())} score(s) are NaN or infinite")
    return scores


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, ties counted as one half (Mann-Whitney U).

    Exact and memory-light enough for pixel AUROC over tens of millions of values: the
    negatives are sorted (a value sort, vectorised in numpy, unlike an argsort) and each
    positive counts the negatives below and equal to it. The positives are sorted too, so
    each binary search starts where the last one ended (about 9x faster over millions of
    positives than random probes into a large array). U is an exact integer count of
    half-pairs, so the one division is correctly rounded.
    """
    labels, scores = _checked(labels, scores, "AUROC")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative samples")
    neg = np.sort(scores[~labels])
    pos = np.sort(scores[labels])
    below = np.searchsorted(neg, pos, side="left")
    upto = np.searchsorted(neg, pos, side="right")
    half_pairs = int(below.sum(dtype=np.int64)) + int(upto.sum(dtype=np.int64))  # 2 x below + ties
    return half_pairs / (2.0 * n_pos * n_neg)


def fpr_at_tpr(labels: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold whose true-positive rate is >= ``tpr``.

    Flagging rule: score >= threshold. Positives are label 1 (anomalous / OOD).
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"FPR@TPR: tpr must be in (0, 1], got {tpr}")
    labels, scores = _checked(labels, scores, "FPR@TPR")
    scores = scores.astype(np.float64)
    pos, neg = np.sort(scores[labels])[::-1], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("FPR@TPR needs both positive and negative samples")
    k = int(np.ceil(tpr * pos.size - 1e-9))
    k = min(max(k, 1), pos.size)
    threshold = pos[k - 1]
    return float((neg >= threshold).mean())


def auroc_by_group(labels: np.ndarray, scores: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Image AUROC of each anomalous group (e.g. defect type) against all normal samples."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores)
    groups = np.asarray(groups)
    if labels.all():
        return {}
    return {g: auroc(labels[keep], scores[keep])
            for g in sorted(set(groups[labels].tolist()))
            for keep in [~labels | (groups == g)]}
