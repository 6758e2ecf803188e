"""Saved scorer state of the wrong shape, or missing an array, is refused at load with one
ScorerFormatError naming the state file, the array, its shape and the shape expected (it once
loaded and crashed deep in scoring, or scored silently wrong)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import Scorer, available_scorers, build_scorer
from anomaly_inspect.scorers.base import ScorerFormatError
from anomaly_inspect.scorers.nuisance import ProjectedScorer, nuisance_subspace
from test_scorer_contract import D, _features, _fit, _inliers  # the contract's tiny fits

STATE = "scorer_state.safetensors"
#: arrays whose damage is tolerated by design: provenance and the search graph (dropped with a
#: warning, or built again), and the stateless scorers' markers (never read)
TOLERATED = ("provenance_", "search_links_", "fitted")
#: arrays a valid state may lack (saved before they were kept, or off): their absence is legal
OPTIONAL = {"item_weights", "search_graph_m", "class_sizes", "tail_max_k", "reads_blocks"}
#: arrays whose length is free (it sets a size others are checked against, or none)
FREE_LENGTH = {"tail_histogram", "tail_indices", "class_sizes"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder of the saved fitted scorer, its state arrays), fitted once per module."""
    rng = np.random.default_rng(0)
    pooled, labels = _inliers(24, rng)
    train = _features(pooled, rng)
    root = tmp_path_factory.mktemp("saved")
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            _fit(name, train, labels).save(root / name)
            cache[name] = root / name, load_file(str(root / name / STATE))
        return cache[name]

    return get


def _checked_keys(state: dict) -> list[str]:
    return [k for k in state if not k.startswith(TOLERATED)]


def _load_with(folder, good: dict, change: dict):
    """Load ``folder`` with its state rewritten: ``change`` maps keys to arrays (None: drop)."""
    state = {k: v for k, v in {**good, **change}.items() if v is not None}
    save_file(state, str(folder / STATE))
    try:
        return Scorer.load(folder, progress=False)
    finally:
        save_file(good, str(folder / STATE))


@pytest.mark.parametrize("name", available_scorers())
def test_an_array_of_another_rank_is_refused_naming_it(name, saved):
    folder, good = saved(name)
    for key in _checked_keys(good):
        if key == "reads_blocks":
            continue
        bad = good[key][None]
        msg = (f"{STATE}: .*(array '{key}' has shape {re.escape(str(bad.shape))}, expected \\("
               # a bank's own check (PatchCore._set_bank's, also for set_state) comes first
               + (r"|memory bank must be a non-empty \(items, width\) array, got shape "
                  + re.escape(str(bad.shape)) if key == "memory_bank" else "") + ")")
        with pytest.raises(ScorerFormatError, match=msg):
            _load_with(folder, good, {key: bad})


@pytest.mark.parametrize("name", available_scorers())
def test_an_array_one_narrower_than_its_partners_is_refused(name, saved):
    folder, good = saved(name)
    for key in _checked_keys(good):
        if key in FREE_LENGTH or good[key].shape[-1] < 2:
            continue
        bad = np.ascontiguousarray(good[key][..., :-1])
        with pytest.raises(ScorerFormatError, match=rf"{STATE}: .*array '[\w.]+' has shape .*, expected"):
            _load_with(folder, good, {key: bad})


@pytest.mark.parametrize("name", available_scorers())
def test_a_missing_array_is_refused_naming_it(name, saved):
    folder, good = saved(name)
    for key in _checked_keys(good):
        if key in OPTIONAL:
            continue
        with pytest.raises(ScorerFormatError, match=rf"{STATE}: .*array '{re.escape(key)}' is missing"):
            _load_with(folder, good, {key: None})


@pytest.mark.parametrize(("name", "key"), [
    ("patchcore", "memory_bank"), ("softpatch", "memory_bank"), ("tailedcore", "memory_bank"),
    ("knn", "bank"), ("mahalanobis", "means"), ("patch_mahalanobis", "mean"), ("msp", "head.in_mean"),
])
def test_a_bank_or_mean_of_another_width_than_the_fit_is_refused(name, key, saved):
    # every array agrees with the others: only scorer.json's input_widths tell the width is wrong
    folder, good = saved(name)
    narrow = {k: np.ascontiguousarray(v[..., :-1]) if v.shape[-1] == D and v.ndim <= 2 else v
              for k, v in good.items() if not k.startswith(TOLERATED)}
    if "precision" in good:
        narrow["precision"] = np.ascontiguousarray(good["precision"][:-1, :-1])
    expected = rf"{STATE}: .*array '{re.escape(key)}' has shape \([^)]*{D - 1},?\), expected \([^)]*={D}"
    with pytest.raises(ScorerFormatError, match=expected):
        _load_with(folder, good, narrow)


def test_mahalanobis_precision_must_be_square_and_one_mean_without_classes(saved):
    folder, good = saved("mahalanobis")
    with pytest.raises(ScorerFormatError, match=re.escape(f"array 'precision' has shape ({D}, {D - 1}), "
                                                          f"expected (pooled={D}, pooled={D})")):
        _load_with(folder, good, {"precision": np.ascontiguousarray(good["precision"][:, :-1])})
    with pytest.raises(ScorerFormatError, match=re.escape(f"array 'means' has shape (2, {D}), "
                                                          f"expected (classes=1, pooled={D})")):
        _load_with(folder, good, {"means": np.concatenate([good["means"]] * 2)})


def test_softpatch_weights_must_be_one_per_bank_item(tmp_path):
    rng = np.random.default_rng(0)
    sp = build_scorer("softpatch", coreset_ratio=0.5, lof_k=3, soft_weight=True, progress=False)
    sp.fit(Features(rng.standard_normal((6, 4, 4, D)).astype(np.float32)))
    sp.save(tmp_path)
    good = load_file(str(tmp_path / STATE))
    n = len(good["memory_bank"])
    for bad in (good["item_weights"][:-1], good["item_weights"][:, None]):
        with pytest.raises(ScorerFormatError, match=re.escape(f"array 'item_weights' has shape "
                                                              f"{bad.shape}, expected (items={n},)")):
            _load_with(tmp_path, good, {"item_weights": np.ascontiguousarray(bad)})
    assert Scorer.load(tmp_path, progress=False).item_weights.shape == (n,)


def test_vim_residual_must_leave_the_principal_dimensions(saved):
    folder, good = saved("vim")
    hidden = good["head.w1"].shape[0]
    wide = np.concatenate([good["residual"], good["residual"][:, :1]], axis=1)
    with pytest.raises(ScorerFormatError, match=re.escape(
            f"array 'residual' has shape {wide.shape}, expected (hidden={hidden}, {hidden // 2})")):
        _load_with(folder, good, {"residual": wide})


def test_a_nuisance_projection_of_another_size_is_refused(tmp_path):
    x = np.concatenate([np.diag([4.0, 3, 2, 1]), -np.diag([4.0, 3, 2, 1])])
    proj = nuisance_subspace(x, x + [0.0, 0, 0, 2], k=1)
    ProjectedScorer(build_scorer("mahalanobis"), proj).fit(Features(pooled=x)).save(tmp_path)
    path = tmp_path / "projection.safetensors"
    good = load_file(str(path))
    for key, bad, expected in (("basis", good["basis"][:-1], "(pooled=4, k)"),
                               ("displacement", np.zeros(2), "(k=1,)"),
                               ("rank", None, None)):
        save_file({k: v for k, v in {**good, key: bad}.items() if v is not None}, str(path))
        what = "is missing" if bad is None else (f"has shape {re.escape(str(bad.shape))}, expected "
                                                 f"{re.escape(expected)}")
        with pytest.raises(ScorerFormatError, match=rf"projection\.safetensors: .*array '{key}' {what}"):
            ProjectedScorer.load(tmp_path)
    save_file(good, str(path))
    np.testing.assert_array_equal(ProjectedScorer.load(tmp_path).projection.basis, proj.basis)
