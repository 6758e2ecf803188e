"""Explained patches by exact search with an approximate index, and explain's ``top`` check."""

from __future__ import annotations

import copy
import functools
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
            e = explain_scored(model, scored, top, image_size=(128, 128), patches=test[0])
            assert [p.cell for p in e.patches] == want
            assert [p.distance for p in e.patches] == pytest.approx(
                [float(ref.patch_scores[0][c]) for c in want], rel=1e-5)
            assert [p.match.item for p in e.patches] == [int(ref.nearest[0][c]) for c in want]
            assert e.patches[0].distance == scored.score  # #1 is the image score, as scored
            # without the features, the approximate ranking (what explain listed before)
            before = explain_scored(model, scored, top, image_size=(128, 128))
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


def test_screen_strips_choose_patches_by_exact_search_with_an_approximate_index(monkeypatch, tmp_path):
    """``screen --explain`` hands the image's patch features to the explanation where the index
    is approximate (so its patches after the first are exact), and none where it is exact."""
    from anomaly_inspect.screening import explain as explain_mod
    from anomaly_inspect.screening.runner import _Strips

    seen = []
    monkeypatch.setattr(explain_mod, "scored_patches", lambda model, scored: ["features"] * len(scored))

    def fake_explain(model, r, top, train, patches=None):
        seen.append(patches)
        raise ValueError("stop here")  # the strip is not drawn: only the call is checked

    monkeypatch.setattr(explain_mod, "explain_scored", fake_explain)
    for exact, expected in [(False, "features"), (True, None)]:
        strips = object.__new__(_Strips)
        strips.model = SimpleNamespace(scorer=SimpleNamespace(_nn=SimpleNamespace(is_exact=exact)))
        strips.out_dir, strips.top, strips.train = tmp_path, 3, None
        assert strips.write(SimpleNamespace(path=str(tmp_path / "a.png")), None) == ""
        assert seen[-1] == expected
