"""Explained patches by exact search with an approximate index, and explain's ``top`` check."""

from __future__ import annotations

import copy
import functools
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from anomaly_inspect.data.transforms import Box, TransformConfig
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.screening.explain import (
    exact_top_patches,
    explain_scored,
    iter_explain,
    top_patches,
)
from anomaly_inspect.screening.model import ScoredImage
from anomaly_inspect.screening.model_dir import ModelInfo

GRID = 16


@functools.cache
def _bank() -> tuple[PatchCore, PatchCore]:
    """One bank searched exactly (flat) and by a poor HNSW graph (efSearch 4)."""
    train = np.random.default_rng(0).standard_normal((12, GRID, GRID, 32)).astype(np.float32)
    exact = PatchCore(coreset_ratio=1.0, index="flat", progress=False).fit(Features(train))
    approx = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(Features(train))
    approx._nn.index.hnsw.efSearch = 4
    return exact, approx


def _scorers(weights: bool = False):
    """:func:`_bank`'s scorers (copies, with soft weights as SoftPatch's where asked) and a
    random generator for test patches."""
    rng = np.random.default_rng(1)
    exact, approx = (copy.copy(s) for s in _bank())
    if weights:
        w = rng.uniform(0.5, 2.0, len(exact.memory_bank)).astype(np.float32)
        exact.item_weights = approx.item_weights = w
    return exact, approx, rng


def _model(scorer):
    return SimpleNamespace(scorer=scorer, info=ModelInfo({}, {}, {}, [], []), threshold=1.0,
                           extractor=SimpleNamespace(transform=TransformConfig(image_size=128)))


def _scored(res) -> ScoredImage:
    return ScoredImage("t.png", float(res.image_scores[0]), 0.5, True, "", res.patch_scores[0],
                       res.nearest[0], Box(0, 0, GRID, GRID), (GRID, GRID))


@pytest.mark.parametrize("weights", [False, True])
def test_patches_equal_the_exact_top_patches_with_a_poor_approximate_index(weights):
    exact, approx, rng = _scorers(weights)
    model = _model(approx)
    stale = 0
    for _ in range(6):
        test = (1.2 * rng.standard_normal((1, GRID, GRID, 32))).astype(np.float32)
        res, ref = approx.score(Features(test)), exact.score(Features(test))
        scored = _scored(res)
        for top in (3, 6):
            want = top_patches(ref.patch_scores[0], top)
            scored.exact_top = (top, exact_top_patches(approx, res.patch_scores[0], res.nearest[0],
                                                        test[0], top))
            e = explain_scored(model, scored, top, image_size=(128, 128))
            assert [p.cell for p in e.patches] == want
            assert [p.distance for p in e.patches] == pytest.approx(
                [float(ref.patch_scores[0][c]) for c in want], rel=1e-5)
            assert [p.match.item for p in e.patches] == [int(ref.nearest[0][c]) for c in want]
            assert e.patches[0].distance == scored.score  # #1 is the image score, as scored
            # the first 3 of an exact top 6 are the exact top 3
            if top == 3:
                six = (6, exact_top_patches(approx, res.patch_scores[0], res.nearest[0], test[0], 6))
                assert explain_scored(model, replace(scored, exact_top=six), 3,
                                      image_size=(128, 128)).patches == e.patches
            # scored for fewer patches than asked, or without: the map's (approximate) ranking
            before = explain_scored(model, replace(scored, exact_top=None), top,
                                    image_size=(128, 128))
            stale += [(p.cell, p.match.item) for p in before.patches] != \
                [(p.cell, p.match.item) for p in e.patches]
    assert stale > 0  # the approximate ranking really differs from the exact one


def test_an_exact_index_keeps_the_scored_map():
    exact, _, rng = _scorers()
    test = (1.2 * rng.standard_normal((1, GRID, GRID, 32))).astype(np.float32)
    res = exact.score(Features(test))
    got = exact_top_patches(exact, res.patch_scores[0], res.nearest[0], test[0], 4)
    assert got == [(r, c, float(res.patch_scores[0][r, c]), int(res.nearest[0][r, c]))
                   for r, c in top_patches(res.patch_scores[0], 4)]


def test_a_small_map_lists_every_non_overlapping_patch():
    exact, approx, rng = _scorers()
    test = (1.2 * rng.standard_normal((1, GRID, GRID, 32))).astype(np.float32)
    res, ref = approx.score(Features(test)), exact.score(Features(test))
    got = exact_top_patches(approx, res.patch_scores[0], res.nearest[0], test[0], 1000)
    assert [(r, c) for r, c, _, _ in got] == top_patches(ref.patch_scores[0], 1000)


@pytest.mark.parametrize("top", [2.5, True, "3", 0, np.float64(2.0)])
def test_top_must_be_a_whole_number(top):
    _, approx, rng = _scorers()
    test = (1.2 * rng.standard_normal((1, GRID, GRID, 32))).astype(np.float32)
    scored = _scored(approx.score(Features(test)))
    with pytest.raises(ValueError, match="top must be a whole number >= 1"):
        explain_scored(_model(approx), scored, top, image_size=(128, 128))
    with pytest.raises(ValueError, match="top must be a whole number >= 1"):
        next(iter_explain(_model(approx), ["t.png"], top))


def _fake_model(scorer, images: np.ndarray, threshold: float):
    """A :class:`Model` whose extractor hands out ``images``' patch features (one batch)."""
    from anomaly_inspect.data.loader import Batch
    from anomaly_inspect.features.extractor import ExtractedBatch
    from anomaly_inspect.screening.calibration import Calibration
    from anomaly_inspect.screening.model import Model

    n = len(images)
    batch = Batch(list(range(n)), np.zeros((n, 3, 128, 128), np.float32), None, [(128, 128)] * n,
                  [], [Box(0, 0, 128, 128)] * n)

    def iter_extract(paths, mask_paths=None, times=None):
        yield ExtractedBatch(batch, Features(images))

    extractor = SimpleNamespace(iter_extract=iter_extract, batch_size=n,
                                transform=TransformConfig(image_size=128))
    calibration = Calibration(threshold, 0.05, 0.05, (0.0, 0.1), 0.95, 20, 1, True, "test")
    return Model(None, extractor, scorer, calibration, ModelInfo({}, {}, {}, [], []))


@pytest.mark.parametrize("explain_all", [False, True])
def test_scoring_for_an_explanation_finds_the_exact_patches_on_the_scored_features(explain_all):
    """``Model.iter_score(explain_top=k)`` (what explain, screen --explain and model.explain
    score with) chooses each image's patches by exact search on the features it scores, for
    the flagged images (every image with ``explain_all``): no second backbone pass."""
    exact, approx, rng = _scorers()
    test = (1.2 * rng.standard_normal((6, GRID, GRID, 32))).astype(np.float32)
    ref = exact.score(Features(test))
    threshold = float(np.median(ref.image_scores))
    model = _fake_model(approx, test, threshold)
    (batch,) = list(model.iter_score([f"{k}.png" for k in range(6)], keep_maps=True,
                                     explain_top=3, explain_all=explain_all, expand=False))
    for k, scored in enumerate(batch.images):
        if not (explain_all or scored.flagged):
            assert scored.exact_top is None
            continue
        want = top_patches(ref.patch_scores[k], 3)
        assert scored.exact_top[0] == 3
        assert [(r, c) for r, c, _, _ in scored.exact_top[1]] == want
        assert [i for _, _, _, i in scored.exact_top[1]] == [int(ref.nearest[k][c]) for c in want]
    assert any(s.exact_top is None for s in batch.images) != explain_all
    # an exact index, or no explanation asked: nothing extra
    for scorer, top in [(exact, 3), (approx, 0)]:
        (batch,) = list(_fake_model(scorer, test, threshold).iter_score(
            [f"{k}.png" for k in range(6)], keep_maps=True, explain_top=top, explain_all=True,
            expand=False))
        assert all(s.exact_top is None for s in batch.images)
