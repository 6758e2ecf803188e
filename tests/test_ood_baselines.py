"""ReAct, DICE, ViM, ODIN (pixels and feature space) and the colour-nuisance projection, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from anomaly_inspect.data.colour_shift import ColourShift, colour_shift
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import build_scorer
from anomaly_inspect.scorers.classifier_head import HeadWeights
from anomaly_inspect.scorers.nuisance import ProjectedScorer, nuisance_subspace
from anomaly_inspect.scorers.ood_baselines import (
    clip_threshold,
    dice_mask,
    odin_feature_confidence,
    react_energy,
    vim_confidence,
    vim_fit,
)


# --- ReAct ---------------------------------------------------------------------------------
def test_react_clips_then_takes_energy_by_hand():
    w, b = np.eye(2), np.zeros(2)
    # a = [3, 0.5] clipped at 1 -> logits [1, 0.5]
    np.testing.assert_allclose(react_energy(np.array([[3.0, 0.5]]), w, b, 1.0),
                               [np.log(np.e + np.exp(0.5))], rtol=1e-12)
    # 50th percentile of 0..9 is 4.5; of an all-zero-but-two array it falls back to the active units
    assert clip_threshold(np.arange(10.0), 50) == pytest.approx(4.5)
    assert clip_threshold(np.array([0.0, 0, 0, 0, 2, 4]), 50) == pytest.approx(3.0)
    # no active unit at all: 0 (every activation is clipped to 0)
    assert clip_threshold(np.zeros((3, 4)), 90) == 0.0


def test_line_and_react_share_the_clip_and_survive_a_dead_hidden_layer():
    # every training hidden unit inactive: LINe took a percentile of no activations (IndexError);
    # it now takes ReAct's clip, 0, so both score the energy of the bias alone, logsumexp(b2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), np.arange(20) % 2
    dead = HeadWeights(in_mean=np.zeros(3), in_std=np.ones(3), w1=np.ones((4, 3)), b1=np.full(4, -1e3),
                       w2=np.arange(8.0).reshape(2, 4), b2=np.array([1.0, 2.0]), classes=np.array([0, 1]))
    for name in ("line", "react"):
        s = build_scorer(name, hidden=4, epochs=1).fit(Features(pooled=x), y)
        s.head = dead
        s._after_fit(Features(pooled=x), y)
        assert s.clip == 0.0
        np.testing.assert_allclose(s.score(Features(pooled=x[:3])).image_scores,
                                   -np.log(np.e + np.e ** 2), rtol=1e-6)
    # with active units both take the same clip (the clip_percentile-th percentile, 90)
    line = build_scorer("line", hidden=4, epochs=1).fit(Features(pooled=x), y)
    assert line.clip == clip_threshold(line.head.hidden(x), 90.0)


# --- DICE ----------------------------------------------------------------------------------
def test_dice_mask_by_hand():
    a_train = np.array([[0.0, 2.0, 3.0], [2.0, 2.0, 3.0]])  # mean [1, 2, 3]
    w = np.array([[1.0, -1.0, 2.0], [3.0, 1.0, -1.0]])
    # contributions [[1, -2, 6], [3, 2, -3]]; median of the six = 1.5
    np.testing.assert_array_equal(dice_mask(a_train, w, 50.0), [[False, False, True], [True, True, False]])


# --- ViM -----------------------------------------------------------------------------------
def test_vim_by_hand():
    w, b = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), np.zeros(2)  # origin = 0
    a_train = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 0.5]])
    origin, residual, alpha = vim_fit(a_train, w, b, dim=2)
    np.testing.assert_allclose(origin, 0.0, atol=1e-12)
    # variances: x 2/5, y 8/5, z 0.25/5 -> principal = {x, y}, residual = z axis
    np.testing.assert_allclose(np.abs(residual[:, 0]), [0, 0, 1], atol=1e-12)
    # training max logits [1, 0, 2, 0, 0] (mean 0.6), residual norms [0, 0, 0, 0, .5] (mean 0.1)
    assert alpha == pytest.approx(6.0)
    conf = vim_confidence(np.array([[1.0, 1.0, 1.0]]), w, b, origin, residual, alpha)
    np.testing.assert_allclose(conf, [np.log(2 * np.e) - 6.0], rtol=1e-12)


def test_vim_refuses_training_activations_with_no_residual_by_hand():
    # 5 rows, 2 of them distinct: x = a - origin has rank 2 = dim, so the residual of every
    # training row is rounding noise and alpha would be ~1e15
    w, b = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), np.array([0.5, -0.5])
    a_train = np.array([[1.0, 2, 3], [0, 1, 0]])[[0, 1, 0, 1, 1]]
    with pytest.raises(ValueError, match=r"^vim: the training features span no residual space "
                                         r"beyond the principal subspace of dim=2"):
        vim_fit(a_train, w, b, dim=2)
    assert vim_fit(a_train, w, b, dim=1)[2] > 0  # one direction fewer leaves a residual


def test_vim_refuses_repeated_images_and_keeps_a_fitted_scorer_whole():
    # 40 distinct images 5 times each: more images (200) than dim (8), but of rank <= 40
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(40, 64))).astype(np.float32)
    s = build_scorer("vim", hidden=256, dim=128, epochs=2)
    with pytest.raises(ValueError, match="span no residual space"):
        s.fit(Features(pooled=np.repeat(x, 5, axis=0)), np.arange(200) % 3)
    fitted = build_scorer("vim", hidden=16, dim=8, epochs=2).fit(Features(pooled=x), np.arange(40) % 3)
    before = fitted.score(Features(pooled=x[:4])).image_scores
    with pytest.raises(ValueError, match="span no residual space"):  # 4 distinct images
        fitted.fit(Features(pooled=np.repeat(x[:4], 10, axis=0)), np.arange(40) % 3)
    np.testing.assert_array_equal(fitted.score(Features(pooled=x[:4])).image_scores, before)


# --- ODIN on features ----------------------------------------------------------------------
def test_odin_feature_perturbs_towards_the_predicted_class_by_hand():
    w1, b1 = np.array([[1.0]]), np.zeros(1)
    w2, b2 = np.array([[1.0], [-1.0]]), np.zeros(2)
    z = np.array([[2.0]])  # logits [2, -2], predicted class 0; raising z raises S_0 -> z + eps
    got = odin_feature_confidence(z, w1, b1, w2, b2, temperature=1.0, epsilon=0.5)
    np.testing.assert_allclose(got, [1 / (1 + np.exp(-5.0))], rtol=1e-12)
    # epsilon 0: temperature-scaled MSP
    got = odin_feature_confidence(z, w1, b1, w2, b2, temperature=2.0, epsilon=0.0)
    np.testing.assert_allclose(got, [1 / (1 + np.exp(-2.0))], rtol=1e-12)


# --- ODIN on pixels ------------------------------------------------------------------------
class _MeanPool(torch.nn.Module):
    """A stand-in backbone: the pooled embedding is each channel's mean."""

    def forward_features(self, x):
        return x

    def forward_head(self, f, pre_logits=True):
        return f.mean((2, 3))


def test_odin_perturbs_pixels_against_the_gradient_by_hand():
    odin = build_scorer("odin", temperature=1.0, epsilon=0.01)
    # hidden = relu(pooled); logits = [h0, h1]: channel 2 reaches no logit
    odin.head = HeadWeights(np.zeros(3), np.ones(3), np.eye(3), np.zeros(3),
                            np.array([[1.0, 0, 0], [0, 1.0, 0]]), np.zeros(2), np.array([0, 1]))
    odin._fitted = True
    x = torch.tensor([0.5, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    std = (0.5, 0.25, 1.0)
    got = odin.perturb(_MeanPool(), x, std)
    # predicted class 0: -log S_0 falls as channel 0 rises (step +eps/std) and as channel 1 falls
    # (step -eps/std); channel 2 has zero gradient and stays
    want = x + torch.tensor([0.01 / 0.5, -0.01 / 0.25, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(got, want)
    # the perturbed copy is more confident, as ODIN intends for in-distribution images
    pooled = lambda t: t.mean((2, 3)).numpy().astype(np.float64)  # noqa: E731
    assert odin.confidence(pooled(got))[0] > odin.confidence(pooled(x))[0]
    # score on unperturbed features: the temperature-scaled MSP
    np.testing.assert_allclose(odin.confidence(pooled(x)), [1 / (1 + np.exp(-0.3))], rtol=1e-6)


def test_odin_perturbs_each_image_on_its_own(monkeypatch):
    """The backward pass runs a few images at a time; the result does not depend on the slicing."""
    from anomaly_inspect.scorers import ood_baselines

    odin = build_scorer("odin", temperature=2.0, epsilon=0.01)
    rng = np.random.default_rng(0)
    odin.head = HeadWeights(np.zeros(3), np.ones(3), rng.normal(size=(4, 3)), rng.normal(size=4),
                            rng.normal(size=(2, 4)), np.zeros(2), np.array([0, 1]))
    odin._fitted = True
    x = torch.from_numpy(rng.normal(size=(5, 3, 4, 4)).astype(np.float32))
    monkeypatch.setattr(ood_baselines, "PERTURB_BATCH", 2)
    sliced = odin.perturb(_MeanPool(), x, (0.5, 0.5, 0.5))
    monkeypatch.setattr(ood_baselines, "PERTURB_BATCH", 64)
    torch.testing.assert_close(sliced, odin.perturb(_MeanPool(), x, (0.5, 0.5, 0.5)), rtol=0, atol=0)


def test_baseline_scorers_use_the_head_by_hand(tmp_path):
    head = HeadWeights(in_mean=np.zeros(2), in_std=np.ones(2), w1=np.eye(2), b1=np.zeros(2),
                       w2=np.eye(2), b2=np.zeros(2), classes=np.array([0, 1]))
    x = np.array([[3.0, -1.0]])  # hidden [3, 0]
    s = build_scorer("react")
    s.head, s.clip, s._fitted = head, 1.0, True  # logits [1, 0]
    np.testing.assert_allclose(s.score(Features(pooled=x)).image_scores, [-np.log(np.e + 1)], rtol=1e-6)
    d = build_scorer("dice")
    d.head, d.mask, d._fitted = head, np.array([[False, False], [False, True]]), True  # logits [0, 0]
    np.testing.assert_allclose(d.score(Features(pooled=x)).image_scores, [-np.log(2.0)], rtol=1e-6)
    o = build_scorer("odin_feature", temperature=1.0, epsilon=0.0)
    o.head, o._fitted = head, True  # MSP of logits [3, 0]
    np.testing.assert_allclose(o.score(Features(pooled=x)).image_scores,
                               [-1 / (1 + np.exp(-3.0))], rtol=1e-6)


@pytest.mark.parametrize("name", ["react", "dice", "vim", "odin_feature"])
def test_baselines_fit_score_and_reject_bad_params(name):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (40, 6)), rng.normal(2, 1, (40, 6))]).astype(np.float32)
    y = np.repeat([0, 1], 40)
    s = build_scorer(name, hidden=8, epochs=30).fit(Features(pooled=x), y)
    r = s.score(Features(pooled=x[:4])).image_scores
    assert r.shape == (4,) and np.isfinite(r).all()
    bad = {"react": {"percentile": 0}, "dice": {"sparsity": 100}, "vim": {"dim": 8, "hidden": 8},
           "odin_feature": {"temperature": 0}}[name]
    with pytest.raises(ValueError, match=name):
        build_scorer(name, **bad)


# --- colour-nuisance projection -------------------------------------------------------------
def test_nuisance_subspace_picks_the_direction_the_shift_moves_by_hand():
    # variance: axis 0 largest (+-3), axis 1 (+-2), axis 2 smallest (+-1); the shift moves axis 2 only
    x = np.array([[3.0, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]])
    y = x + [0.0, 0.0, 1.0]
    p = nuisance_subspace(x, y, k=1)
    np.testing.assert_allclose(np.abs(p.basis[:, 0]), [0, 0, 1], atol=1e-12)
    assert p.rank.tolist() == [2] and p.displacement[0] == pytest.approx(1.0)
    np.testing.assert_allclose(p.apply(np.array([[1.0, 2.0, 3.0]])), [[1.0, 2.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="span only"):
        nuisance_subspace(x, y, k=4)


def test_projected_scorer_removes_the_direction_and_round_trips(tmp_path):
    x = np.concatenate([np.diag([4.0, 3, 2, 1]), -np.diag([4.0, 3, 2, 1])])  # PCs = the axes
    y = x + [0.0, 0, 0, 2]  # the "colour" moves axis 3 only
    proj = nuisance_subspace(x, y, k=1)
    s = ProjectedScorer(build_scorer("mahalanobis"), proj).fit(Features(pooled=x))
    q = np.array([[0.0, 0, 0, 0], [0.0, 0, 0, 50.0], [0.0, 0, 50.0, 0]])
    r = s.score(Features(pooled=q)).image_scores
    assert r[1] == pytest.approx(r[0], abs=1e-6) and r[2] > 100  # only the nuisance axis is ignored
    s.save(tmp_path / "p")
    back = ProjectedScorer.load(tmp_path / "p")
    np.testing.assert_allclose(back.score(Features(pooled=q)).image_scores, r, rtol=1e-6)
    np.testing.assert_allclose(back.projection.basis, proj.basis)
    with pytest.raises(ValueError, match="pooled"):
        ProjectedScorer(build_scorer("patchcore"), proj)


def test_colour_shift_is_seeded_and_keeps_grey():
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    img = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = colour_shift(img, mean, std, torch.Generator().manual_seed(1))
    b = colour_shift(img, mean, std, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, img)
    same = colour_shift(img, mean, std, torch.Generator().manual_seed(1), ColourShift(0.0, (1.0, 1.0), 0.0))
    torch.testing.assert_close(same, img, atol=1e-5, rtol=0)
    grey = torch.zeros(2, 3, 4, 4)  # mid grey: hue and saturation leave it grey
    out = colour_shift(grey, mean, std, torch.Generator().manual_seed(2), ColourShift(0.5, (0.5, 1.5), 0.0))
    torch.testing.assert_close(out, grey, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="hue"):
        ColourShift(hue=0.7)


def test_energy_helper_matches_scipy():
    assert logsumexp([0.0, 0.0]) == pytest.approx(np.log(2))
