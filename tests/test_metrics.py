"""AUROC and FPR@TPR against hand-computed values, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.evaluation.metrics import auroc, fpr_at_tpr


def test_auroc_perfect_and_inverted():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_auroc_counts_ties_as_half():
    # pairs (pos, neg): (0.5 vs 0.5) tie = 0.5, (0.5 vs 0.1) = 1, (0.9 vs both) = 2 -> 3.5 / 4
    assert auroc([1, 1, 0, 0], [0.5, 0.9, 0.5, 0.1]) == pytest.approx(0.875)
    assert auroc([1, 0], [0.3, 0.3]) == 0.5


def test_auroc_matches_pairwise_count_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert auroc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="needs both positive and negative samples"):
        auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="needs both positive and negative samples"):
        auroc([0, 0], [0.1, 0.2])


def test_fpr_at_tpr_by_hand():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.2, 0.75, 0.5, 0.3, 0.1]
    # TPR 0.75 -> threshold 0.7 (3 of 4 positives >= 0.7); negatives >= 0.7: 0.75 -> 1/4
    assert fpr_at_tpr(labels, scores, 0.75) == pytest.approx(0.25)
    # TPR 0.95 -> all 4 positives, threshold 0.2: negatives >= 0.2: 0.75, 0.5, 0.3 -> 3/4
    assert fpr_at_tpr(labels, scores, 0.95) == pytest.approx(0.75)


def test_fpr_at_tpr_with_tied_scores():
    # the tie at 0.5 between a positive and a negative counts as flagged (score >= threshold)
    assert fpr_at_tpr([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], 1.0) == pytest.approx(0.5)


def test_auroc_by_group_by_hand():
    from anomaly_inspect.evaluation.metrics import auroc_by_group

    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.3, 0.9, 0.5])
    groups = ["good", "good", "crack", "hole", "hole"]
    # crack: 0.3 beats 0.1, loses to 0.4 -> 1/2; hole: 0.9 and 0.5 beat both -> 1
    assert auroc_by_group(labels, scores, groups) == {"crack": 0.5, "hole": 1.0}
    # the overall AUROC is the anomaly-count-weighted mean of the groups' (1/3 * 0.5 + 2/3 * 1)
    assert auroc(labels, scores) == pytest.approx(5 / 6)
    assert auroc_by_group(np.ones(2), np.zeros(2), ["a", "b"]) == {}


def test_metrics_refuse_what_would_give_a_wrong_number():
    """Other shapes (a mask and a map in another layout), labels other than 0 / 1, NaN or inf
    scores and a TPR outside (0, 1] are errors, not a number (8x4 against 4x8 gave 0.5; NaN
    ranked as the most anomalous; tpr=95 was clamped to 1)."""
    mask = np.zeros((4, 8), bool)
    mask[:, :2] = True
    with pytest.raises(ValueError, match=r"labels of shape \(4, 8\) and scores of shape \(8, 4\)"):
        auroc(mask, mask.astype(float).reshape(8, 4))
    for fn in (auroc, lambda y, s: fpr_at_tpr(y, s, 0.5)):
        with pytest.raises(ValueError, match=r"labels must be 0 / 1 \(1 = anomalous\), got \[-1, 1\]"):
            fn(np.array([-1, -1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
        with pytest.raises(ValueError, match="1 score\\(s\\) are NaN or infinite"):
            fn(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, np.nan, 0.05]))
    for tpr in (95, 0, -0.5):
        with pytest.raises(ValueError, match=r"tpr must be in \(0, 1\]"):
            fpr_at_tpr([0, 1], [0.1, 0.2], tpr)
    assert auroc(np.array([True, False]), np.array([0.9, 0.1])) == 1.0
    assert fpr_at_tpr([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.4], 1.0) == 0.5


def test_ood_metrics_refuse_non_finite_scores_as_the_metrics_do():
    """One finiteness check (:func:`finite_scores`) for both conventions, naming the side."""
    from anomaly_inspect.evaluation.metrics import finite_scores
    from anomaly_inspect.evaluation.ood import ood_fpr_at_tpr, ood_metrics

    with pytest.raises(ValueError, match=r"^ID scores: 2 score\(s\) are NaN or infinite$"):
        ood_metrics(np.array([np.nan, np.inf, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match=r"^OOD scores: 1 score\(s\) are NaN or infinite$"):
        ood_fpr_at_tpr(np.ones(2), np.array([-np.inf]), 0.8)
    with pytest.raises(ValueError, match="OOD metrics need at least one ID score"):
        ood_metrics(np.zeros(0), np.ones(2))
    scores = np.array([0.5, 1.0])
    assert finite_scores(scores, "x") is scores
