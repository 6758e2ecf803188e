"""Defining behaviours checked by hand: the energy score, l2norm's normalised head, patch
Mahalanobis's image score, TailSampler's elbow and the long-tail class-size report."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.core import Features
from anomaly_inspect.data.longtail import LongTailSet
from anomaly_inspect.evaluation.longtail import class_size_report
from anomaly_inspect.scorers import build_scorer
from anomaly_inspect.scorers.classifier_head import HeadWeights
from anomaly_inspect.scorers.tail_sampler import TailSampler, TailSamplerResult
from test_tailedcore import clusters


def test_energy_score_is_minus_logsumexp_of_the_logits_by_hand():
    """Identity head, input [3, -1]: hidden relu -> [3, 0] = the logits; the energy confidence
    is log(e^3 + e^0), and the score (higher = more anomalous) is its negation; the largest
    logit alone (max_logit's) would give -3."""
    head = HeadWeights(in_mean=np.zeros(2), in_std=np.ones(2), w1=np.eye(2), b1=np.zeros(2),
                       w2=np.eye(2), b2=np.zeros(2), classes=np.array([0, 1]))
    s = build_scorer("energy")
    s.head, s._fitted = head, True
    score = s.score(Features(pooled=np.array([[3.0, -1.0]]))).image_scores
    np.testing.assert_allclose(score, [-np.log(np.exp(3.0) + 1.0)], atol=1e-6)  # -3.0486


def test_l2norm_trains_a_head_on_l2_normalised_hidden_features():
    """Haas et al.: the head's logits read a / ||a||, so scaling the hidden activations by 3
    leaves them unchanged, while the score (the un-normalised ||a||) reads the scale."""
    s = build_scorer("l2norm", hidden=8, epochs=3)
    assert s.head_config().l2_normalize and not build_scorer("head_feature_norm").head_config().l2_normalize
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (12, 4)) + np.repeat(np.eye(4)[:2] * 3, 6, axis=0)
    s.fit(Features(pooled=x.astype(np.float32)), np.repeat([0, 1], 6))
    assert s.head.l2_normalize
    a = s.head.hidden(x)
    assert (np.linalg.norm(a, axis=1) > 0).all()
    np.testing.assert_allclose(s.head.logits_from_hidden(3 * a), s.head.logits_from_hidden(a),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.score(Features(pooled=x.astype(np.float32))).image_scores,
                               -np.linalg.norm(a, axis=1), rtol=1e-5)


def test_patch_mahalanobis_image_score_is_the_max_over_valid_patches_by_hand():
    """Mean 0, precision I: one image patch at [3, 0] among zeros scores 3^2 = 9, the image
    scores 9 (the max, not the mean); a padding patch at 100 (valid False) is ignored."""
    s = build_scorer("patch_mahalanobis")
    s.mean, s.precision, s._fitted = np.zeros(2), np.eye(2), True
    patches = np.zeros((1, 2, 2, 2), np.float32)
    patches[0, 0, 0] = [3.0, 0.0]
    patches[0, 1, 1] = [100.0, 0.0]
    valid = np.ones((1, 2, 2), bool)
    valid[0, 1, 1] = False
    result = s.score(Features(patches=patches, valid=valid))
    np.testing.assert_allclose(result.image_scores, [9.0])
    assert result.patch_scores[0, 0, 0] == pytest.approx(9.0)


def test_tail_sampler_cut_is_the_elbow_when_below_the_mass_cut():
    """Classes of 58, 41, 29, 19, 1 and 1 images: the 15 % mass cut (22 images) lets 19 in,
    the histogram's elbow is 1; the cut-off is the smaller (1): only the two single images."""
    res = TailSampler().run(clusters([58, 41, 29, 19, 1, 1], dim=32))
    assert res.max_k == 1
    np.testing.assert_array_equal(res.tail_indices, [147, 148])


def test_class_size_report_precision_recall_and_detection_by_hand():
    """Head class a (6 images, 1 flagged), tail b (2, both flagged), tail c (3, 1 flagged):
    4 flagged, 3 of them in tail classes -> precision 3/4; 3 of the 5 tail images flagged ->
    recall 3/5; b is detected (2/2 > half), c is not (1/3)."""
    categories = ["a"] * 6 + ["b"] * 2 + ["c"] * 3
    sizes = np.array([6] * 6 + [2] * 2 + [3] * 3)
    result = TailSamplerResult(class_sizes=sizes, thresholds=np.zeros(11, np.float32),
                               histogram=np.array([6, 3, 2]), max_k=2,
                               tail_indices=np.array([0, 6, 7, 8]))
    counts = {c: {"original": n, "good": n, "noise": 0} for c, n in (("a", 6), ("b", 2), ("c", 3))}
    split = LongTailSet(tail="step", k=2, noise=0.0, seed=0, overlap=False,
                        categories=["a", "b", "c"], tail_classes=["b", "c"], train=[],
                        counts=counts)
    report = class_size_report(result, categories, split)
    assert report["n_tail_images_flagged"] == 4
    assert report["tail_image_precision"] == pytest.approx(3 / 4)
    assert report["tail_image_recall"] == pytest.approx(3 / 5)
    assert report["tail_classes_detected"] == {"b": True, "c": False}
    assert report["per_class"]["c"]["flagged_fraction"] == pytest.approx(1 / 3)
    assert report["true_histogram"] == [6, 3, 2]
