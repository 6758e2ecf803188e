"""Norm, distance, classifier-head and LINe scorers against hand-computed values."""

from __future__ import annotations

import re

import numpy as np
import pytest

from anomaly_inspect.evaluation.ood import ood_fpr_at_tpr, ood_metrics
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import Scorer, build_scorer
from anomaly_inspect.scorers.classifier_head import HeadConfig, HeadWeights, train_head
from anomaly_inspect.scorers.line import contribution_matrix, line_energy
from anomaly_inspect.scorers.norms import block_feature_norm, feature_norm, nan_confidence


# --- norms, by hand ------------------------------------------------------------------------
def test_nan_by_hand():
    a = np.array([[3.0, 0.0, 1.0, 0.0],    # L1 = 4, L0 = 2 -> 2
                  [1.0, 1.0, 1.0, 1.0],    # 4 / 4 -> 1
                  [0.0, 0.0, 0.0, 5.0],    # 5 / 1 -> 5
                  [0.0, 0.0, 0.0, 0.0]])   # no active unit -> 0
    np.testing.assert_allclose(nan_confidence(a), [2.0, 1.0, 5.0, 0.0], atol=1e-5)


def test_nan_counts_only_positive_units():
    # a negative pre-activation is inactive: L1 = 2 + 2 = 4 but L0 = 1 -> 4
    np.testing.assert_allclose(nan_confidence(np.array([[2.0, -2.0, 0.0]])), [4.0], atol=1e-5)


def test_feature_norm_by_hand():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(feature_norm(a), [5.0, 1.0])
    np.testing.assert_allclose(feature_norm(a, p=1), [7.0, 1.0])


def test_block_feature_norm_by_hand():
    # one image, 2x2 map, 2 channels: ch0 = [[3, -1], [0, 4]] -> relu L2 = 5;
    # ch1 = [[1, 1], [1, 1]] -> 2; mean over channels = 3.5
    maps = np.zeros((1, 2, 2, 2))
    maps[0, :, :, 0] = [[3, -1], [0, 4]]
    maps[0, :, :, 1] = 1.0
    np.testing.assert_allclose(block_feature_norm(maps), [3.5])
    # the scorer reads the per-channel norms the extractor computes (Features.blocks): the same
    np.testing.assert_allclose(block_feature_norm(np.array([[[[5.0, 2.0]]]])), [3.5])
    norms = {"final": np.array([[5.0, 2.0]])}
    s = build_scorer("block_feature_norm").fit(Features(blocks=norms))
    np.testing.assert_allclose(s.score(Features(blocks=norms)).image_scores, [-3.5])


def test_block_feature_norm_leaves_padding_out_by_hand():
    # one image, 1x3 map, 1 channel: [3, 4, 100], the last cell on padding -> L2 of [3, 4] = 5
    maps = np.array([3.0, 4.0, 100.0]).reshape(1, 1, 3, 1)
    valid = np.array([[[True, True, False]]])
    np.testing.assert_allclose(block_feature_norm(maps, valid), [5.0])
    np.testing.assert_allclose(block_feature_norm(maps), [np.sqrt(9 + 16 + 100 ** 2)])
    # whatever the padding holds, the norm is 5
    for pad in (100.0, -7.0, 1e4):
        m = maps.copy()
        m[0, 0, 2, 0] = pad
        np.testing.assert_allclose(block_feature_norm(m, valid), [5.0])
    with pytest.raises(ValueError, match="valid mask of shape"):
        block_feature_norm(maps, valid[:, :, :2])


def test_norm_scorers_sign_and_save(tmp_path):
    train = Features(pooled=np.ones((3, 4), np.float32))
    test = Features(pooled=np.array([[3.0, 0, 1, 0], [1.0, 1, 1, 1]], np.float32))
    nan = build_scorer("nan").fit(train)
    np.testing.assert_allclose(nan.score(test).image_scores, [-2.0, -1.0], atol=1e-5)
    fn = build_scorer("feature_norm").fit(train)
    np.testing.assert_allclose(fn.score(test).image_scores, [-np.sqrt(10), -2.0], atol=1e-5)
    nan.save(tmp_path / "nan")
    again = Scorer.load(tmp_path / "nan")
    np.testing.assert_allclose(again.score(test).image_scores, [-2.0, -1.0], atol=1e-5)
    with pytest.raises(ValueError, match="pooled"):
        nan.score(Features(patches=np.zeros((1, 2, 2, 3))))


# --- distances -----------------------------------------------------------------------------
def test_mahalanobis_fixed_shrinkage_by_hand():
    # centred data with covariance diag(2, 8), trace / d = 5; shrinkage 0.5 ->
    # cov = 0.5 diag(2, 8) + 0.5 * 5 I = diag(3.5, 6.5), distance = x0^2/3.5 + x1^2/6.5
    x = np.array([[1.0, 2.0], [-1.0, -2.0], [1.0, -2.0], [-1.0, 2.0]]) * np.sqrt([2.0, 8.0]) / [1, 2]
    m = build_scorer("mahalanobis", shrinkage=0.5).fit(Features(pooled=x))
    q = np.array([[2.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(m.score(Features(pooled=q)).image_scores, [4 / 3.5, 16 / 6.5], rtol=1e-5)


def test_mahalanobis_sees_a_direction_no_training_image_varies_in_by_hand():
    # training images vary along x0 only: covariance diag(1, 0), trace / d = 0.5; shrinkage 0.5
    # -> diag(0.75, 0.25): a step of 1 along the dead x1 costs 4, along x0 only 4/3
    # (shrinkage 0, refused now, gave the dead direction no weight at all: distance 0)
    x = np.array([[1.0, 0.0], [-1.0, 0.0]])
    m = build_scorer("mahalanobis", shrinkage=0.5).fit(Features(pooled=x))
    q = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(m.score(Features(pooled=q)).image_scores, [4.0, 4 / 3], rtol=1e-6)
    p = build_scorer("patch_mahalanobis", shrinkage=0.5).fit(Features(patches=x.reshape(2, 1, 1, 2)))
    np.testing.assert_allclose(p.score(Features(patches=q.reshape(2, 1, 1, 2))).image_scores,
                               [4.0, 4 / 3], rtol=1e-6)


@pytest.mark.parametrize("value", [1.0, 0.1, 0.0])
def test_mahalanobis_refuses_training_features_that_do_not_vary(value):
    # constant features: a zero covariance, whose pseudo-inverse scored every input 0 (0.1: the
    # mean is off by rounding, leaving a covariance of ~1e-34 rather than 0)
    x = np.full((7, 3), value)
    for params in ({}, {"shrinkage": 0.5}):
        with pytest.raises(ValueError, match=r"^mahalanobis: the training features do not vary "
                                             r"around their mean"):
            build_scorer("mahalanobis", **params).fit(Features(pooled=x))
    with pytest.raises(ValueError, match=r"^patch_mahalanobis: the training features do not vary"):
        build_scorer("patch_mahalanobis").fit(Features(patches=x.reshape(7, 1, 1, 3)))
    # one image per class: nothing varies around the class means
    with pytest.raises(ValueError, match="do not vary around their class means"):
        build_scorer("mahalanobis", class_conditional=True).fit(
            Features(pooled=np.eye(3)), np.array([0, 1, 2]))


def test_mahalanobis_class_conditional_and_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(10, 1, (50, 3))])
    y = np.repeat([0, 1], 50)
    m = build_scorer("mahalanobis", class_conditional=True).fit(Features(pooled=x), y)
    s = m.score(Features(pooled=np.array([[0.0, 0, 0], [10.0, 10, 10], [5.0, 5, 5]]))).image_scores
    assert s[2] > 10 * max(s[0], s[1])  # between the classes is far from both
    m.save(tmp_path / "m")
    np.testing.assert_allclose(Scorer.load(tmp_path / "m").score(Features(pooled=x[:3])).image_scores,
                               m.score(Features(pooled=x[:3])).image_scores, rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        build_scorer("mahalanobis", class_conditional=True).fit(Features(pooled=x))


@pytest.mark.parametrize("labels", [np.arange(5) % 2, (np.arange(100) % 2)[:, None]])
def test_mahalanobis_class_conditional_refuses_labels_not_one_per_image(labels):
    # 5 labels, or (100, 1), for 100 images: a raw IndexError from the class means before
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match=r"^mahalanobis: class_conditional=True needs one ID class "
                                         r"label per training image, shape \(100,\), got labels of "
                                         r"shape " + re.escape(str(labels.shape))):
        build_scorer("mahalanobis", class_conditional=True).fit(Features(pooled=x), labels)


def test_knn_kth_and_mean_by_hand():
    bank = Features(pooled=np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))
    q = Features(pooled=np.array([[0.0, 0.0]]))
    kth = build_scorer("knn", k=2, normalize=False).fit(bank)
    np.testing.assert_allclose(kth.score(q).image_scores, [1.0], atol=1e-6)
    mean = build_scorer("knn", k=3, normalize=False, reduction="mean").fit(bank)
    np.testing.assert_allclose(mean.score(q).image_scores, [4.0 / 3.0], atol=1e-6)


def test_knn_nan_fusion_by_hand():
    bank = Features(pooled=np.array([[1.0, 0.0], [0.0, 1.0]]))
    q = Features(pooled=np.array([[2.0, 0.0]]))  # cosine: distance 0 to [1, 0]... k=2 -> sqrt(2)
    f = build_scorer("knn_nan", k=2).fit(bank)
    # NAN([2, 0]) = 2 / 1 = 2 -> sqrt(2) / 2
    np.testing.assert_allclose(f.score(q).image_scores, [np.sqrt(2) / 2], atol=1e-5)


# --- metrics -------------------------------------------------------------------------------
def test_ood_metrics_with_ties_by_hand():
    id_s = np.array([0.0, 1.0, 2.0, 3.0, 4.0])  # anomaly scores; confidence = -s
    ood_s = np.array([3.0, 5.0, 6.0, 4.0])
    m = ood_metrics(id_s, ood_s)
    # pairs (ood > id): 3 -> beats 0,1,2 and ties 3 (3.5); 5 and 6 beat all (5 each);
    # 4 beats 0..3 and ties 4 (4.5) -> 18 / 20
    assert m.auroc == pytest.approx(18 / 20)
    # TPR 80 %: keep ceil(0.8 * 5) = 4 ID images -> threshold s <= 3; OOD accepted: the 3 -> 1/4
    assert m.fpr_at_tpr80 == pytest.approx(0.25)
    # TPR 95 %: ceil(4.75) = 5 -> threshold s <= 4; OOD accepted: 3 and 4 (tie) -> 2/4
    assert m.fpr_at_tpr95 == pytest.approx(0.5)
    assert (m.n_id, m.n_ood) == (5, 4)


def test_ood_metrics_all_tied_and_bad_input():
    m = ood_metrics(np.ones(4), np.ones(3))
    assert m.auroc == pytest.approx(0.5) and m.fpr_at_tpr80 == 1.0
    assert ood_fpr_at_tpr(np.array([0.0, 1.0]), np.array([2.0]), 0.8) == 0.0
    with pytest.raises(ValueError, match=r"^ID scores: 1 score\(s\) are NaN or infinite$"):
        ood_metrics(np.array([np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="^OOD metrics need at least one OOD score$"):
        ood_metrics(np.ones(2), np.zeros(0))


# --- classifier head and LINe --------------------------------------------------------------
def _blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-2, 1, (n, 8)), rng.normal(2, 1, (n, 8))]).astype(np.float32)
    return x, np.repeat([0, 1], n)


def test_head_is_seeded_and_learns():
    x, y = _blobs()
    cfg = HeadConfig(hidden=16, epochs=20, seed=3)
    h1, h2 = train_head(x, y, cfg), train_head(x, y, cfg)
    np.testing.assert_array_equal(h1.w1, h2.w1)
    assert (h1.logits(x).argmax(1) == y).mean() > 0.95
    with pytest.raises(ValueError, match="2 ID classes"):
        train_head(x, np.zeros(len(x)), cfg)


def test_head_refuses_labels_that_are_not_whole_numbers(tmp_path):
    # class names used to train, then failed at save (safetensors stores no strings)
    x, y = _blobs(n=10)
    cfg = HeadConfig(hidden=4, epochs=1)
    with pytest.raises(ValueError, match=r"ID class labels must be whole numbers, got <U3 labels "
                                         r"such as 'cat'; map class names to 0\.\.K-1 first"):
        train_head(x, np.array(["cat", "dog"])[y], cfg)
    with pytest.raises(ValueError, match=r"got float64 labels such as 0\.5"):
        train_head(x, y + 0.5, cfg)
    with pytest.raises(ValueError, match="whole numbers"):
        build_scorer("msp", hidden=4, epochs=1).fit(Features(pooled=x), np.array(["a", "b"])[y])
    # whole numbers of any numeric type train and save
    for labels in (y, y.astype(np.uint8), y.astype(np.float32), y.astype(bool)):
        s = build_scorer("msp", hidden=4, epochs=1).fit(Features(pooled=x), labels)
        s.save(tmp_path / str(labels.dtype))


def test_head_with_dropout_does_not_depend_on_the_global_rng_nor_change_it():
    import torch

    x, y = _blobs()
    cfg = HeadConfig(hidden=16, epochs=5, dropout=0.5, seed=3)
    h1 = train_head(x, y, cfg)
    torch.rand(7)  # whatever ran before the head must not change it
    state = torch.random.get_rng_state()
    h2 = train_head(x, y, cfg)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG untouched
    np.testing.assert_array_equal(h1.w1, h2.w1)
    np.testing.assert_array_equal(h1.w2, h2.w2)


def test_l2_normalised_head_logits_ignore_scale():
    x, y = _blobs()
    h = train_head(x, y, HeadConfig(hidden=16, epochs=10, l2_normalize=True))
    a = h.hidden(x)
    np.testing.assert_allclose(h.logits_from_hidden(a), h.logits_from_hidden(3 * a), atol=1e-9)


@pytest.mark.parametrize("name", ["msp", "energy", "max_logit", "head_nan", "head_feature_norm",
                                  "l2norm", "line"])
def test_head_scorers_flag_far_points_and_roundtrip(name, tmp_path):
    x, y = _blobs()
    s = build_scorer(name, hidden=16, epochs=20).fit(Features(pooled=x), y)
    far = Features(pooled=np.full((5, 8), 0.0, np.float32))  # between the classes
    ind = Features(pooled=x[:5])
    r_far, r_in = s.score(far).image_scores, s.score(ind).image_scores
    assert np.isfinite(r_far).all() and r_far.shape == (5,)
    if name == "msp":
        assert r_far.mean() > r_in.mean()  # the class boundary is uncertain
    s.save(tmp_path / name)
    np.testing.assert_allclose(Scorer.load(tmp_path / name).score(ind).image_scores, r_in, rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        build_scorer(name).fit(Features(pooled=x))


def test_head_scorers_use_the_hidden_layer_by_hand():
    head = HeadWeights(in_mean=np.zeros(2), in_std=np.ones(2), w1=np.eye(2), b1=np.zeros(2),
                       w2=np.array([[1.0, 0.0], [0.0, 1.0]]), b2=np.zeros(2), classes=np.array([0, 1]))
    for name, expected in (("head_nan", -3.0), ("head_feature_norm", -3.0), ("max_logit", -3.0)):
        s = build_scorer(name)
        s.head, s._fitted = head, True
        np.testing.assert_allclose(s.score(Features(pooled=np.array([[3.0, -1.0]]))).image_scores,
                                   [expected], atol=1e-5)


def test_line_matches_definition_on_small_linear_model():
    # hidden activations of 4 training images (2 per class), 3 units, 2 classes
    a_train = np.array([[1.0, 0.0, 2.0], [3.0, 2.0, 0.0], [0.0, 4.0, 1.0], [2.0, 2.0, 1.0]])
    y = np.array([0, 0, 1, 1])
    w = np.array([[1.0, -1.0, 2.0], [-1.0, 2.0, 0.5]])
    b = np.array([0.1, -0.2])
    contrib = contribution_matrix(a_train, y, w)
    # class 0: mean a = [2, 1, 1] * W0 = [2, -1, 2]; class 1: mean a = [1, 3, 1] * W1 = [-1, 6, .5]
    np.testing.assert_allclose(contrib, [[2.0, -1.0, 2.0], [-1.0, 6.0, 0.5]])

    a = np.array([[0.5, 3.0, 1.5]])
    clip, p_a, p_w = 2.0, 50.0, 50.0
    # by hand: clipped a = [0.5, 2, 1.5]; logits = [0.5 - 2 + 3 + .1, -.5 + 4 + .75 - .2]
    #   = [1.6, 4.05] -> c^ = 1. C[1] = [-1, 6, .5], median .5 -> keep unit 1 only: a' = [0, 2, 0]
    # M = |C[1]| * W = [[1, -6, 1], [-1, 12, .25]]; median of the 6 entries = (.25 + 1) / 2
    #   = .625 -> keep W00, W01? no: keep entries > .625: W00 (1), W02 (1), W11 (12)
    # logits' = [W00*0 + W02*0 + .1, W11*2 - .2] = [.1, 3.8]
    expected = np.log(np.exp(0.1) + np.exp(3.8))
    np.testing.assert_allclose(line_energy(a, w, b, contrib, clip, p_a, p_w), [expected], rtol=1e-9)


@pytest.mark.parametrize("key", ["p_a", "p_w"])
def test_line_refuses_a_percentile_that_keeps_nothing(key):
    """p_a (p_w) = 100 keeps no neuron (weight): every image scores the bias's energy (AUROC 0.5,
    no warning); refused as DICE's sparsity 100 is, while 99.9 is taken."""
    with pytest.raises(ValueError, match=rf"line: {key} must be a number in \[0, 100\), got 100"):
        build_scorer("line", **{key: 100})
    assert getattr(build_scorer("line", **{key: 99.9}), key) == 99.9


# --- label-free orientation from jigsaw pseudo-OOD ---------------------------------------------
def test_jigsaw_moves_whole_tiles_and_keeps_the_border():
    import torch

    from anomaly_inspect.data.pseudo_ood import jigsaw

    img = torch.arange(25.0).reshape(1, 1, 5, 5).repeat(3, 2, 1, 1)  # 5x5: a 2x2 grid of 2x2 tiles
    out = jigsaw(img, grid=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, 4, :], img[:, :, 4, :]) and torch.equal(out[:, :, :, 4], img[:, :, :, 4])
    tiles = {tuple(img[0, 0, r:r + 2, c:c + 2].flatten().tolist()) for r in (0, 2) for c in (0, 2)}
    for b in range(3):
        got = [tuple(out[b, 0, r:r + 2, c:c + 2].flatten().tolist()) for r in (0, 2) for c in (0, 2)]
        assert set(got) == tiles  # same four tiles, each whole
        assert not torch.equal(out[b], img[b])  # never the identity order
        assert torch.equal(out[b, 0], out[b, 1])  # channels move together
    with pytest.raises(ValueError, match="too small"):
        jigsaw(torch.zeros(1, 3, 2, 2), grid=3)


def test_orientation_by_hand():
    from anomaly_inspect.evaluation.ood import orientation

    # anomaly scores: ID train 1, 2; pseudo-OOD 3, 4 -> published direction right (AUROC 1)
    o = orientation(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert o.pseudo_auroc == 1.0 and not o.flipped and o.sign == 1.0
    # pseudo-OOD scored lower than ID train: 1 of 4 pairs right (3 > 2.5) -> AUROC 0.25, negate
    o = orientation(np.array([2.0, 3.0]), np.array([1.0, 2.5]))
    assert o.pseudo_auroc == 0.25 and o.flipped and o.sign == -1.0
    # exactly 0.5 keeps the published direction
    assert not orientation(np.array([1.0, 2.0]), np.array([1.0, 2.0])).flipped


# Defining behaviours checked by hand: the energy score, l2norm's normalised head, patch
# Mahalanobis's image score.
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
