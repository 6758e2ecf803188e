"""The scorer contract, checked on every registered scorer (in the spirit of scikit-learn's
``check_estimator``): naming, ``fit`` / ``score`` shapes, ``NotFittedError``, save / load,
``get_params`` and that planted outliers score above inliers.

Data: inliers are tight clusters of large positive activations (two classes for the
scorers that train a classifier head); outliers are small activations far from them
(between the classes, with a small norm), so every family of scorer (distance,
memory bank, norm, classifier head) should rank them above the inliers.
"""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import NotFittedError, Scorer, available_scorers, get_scorer_class

D, H, W = 8, 4, 4
N_TRAIN, N_TEST = 24, 6

# small settings where the defaults are slow or need more images than the test has
FAST = {
    "patchcore": {"coreset_ratio": 0.5},
    "softpatch": {"coreset_ratio": 0.5, "lof_k": 3},
    "tailedcore": {"coreset_ratio": 0.5, "lof_k": 3},
    "knn": {"k": 2},
    "knn_nan": {"k": 2},
}
HEAD = {"hidden": 16, "epochs": 200, "lr": 1e-2}


def _params(name: str) -> dict:
    cls = get_scorer_class(name)
    params = dict(FAST.get(name, {}))
    if "epochs" in cls.constructor_params():
        params.update(HEAD)
    params.update(cls.runtime_kwargs(progress=False))
    return params


def _inliers(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) pooled rows of two classes, 3 on one half of the units and 0 on the other."""
    labels = np.arange(n) % 2
    centres = np.zeros((2, D))
    centres[0, : D // 2] = centres[1, D // 2:] = 3.0
    return centres[labels] + rng.normal(0, 0.1, (n, D)), labels


def _block_norms(patches: np.ndarray) -> dict[str, np.ndarray]:
    """The grids' per-channel L2 norms after ReLU, as the extractor gives a block's."""
    return {"final": np.sqrt((np.maximum(patches, 0) ** 2).sum(axis=(1, 2))).astype(np.float32)}


def _features(pooled: np.ndarray, rng: np.random.Generator) -> Features:
    """Pooled rows plus (N, H, W, D) patch grids scattered tightly around each row, and the
    grids' block norms."""
    patches = pooled[:, None, None, :] + rng.normal(0, 0.05, (len(pooled), H, W, D))
    return Features(patches=patches.astype(np.float32), pooled=pooled.astype(np.float32),
                    blocks=_block_norms(patches))


def _field(name: str, features: Features) -> tuple[str, np.ndarray]:
    """The first field scorer ``name`` reads, as its errors name it, and its array."""
    field = get_scorer_class(name).requires[0]
    if field == "blocks":
        return "block 'final'", features.blocks["final"]
    return field, getattr(features, field)


def _narrow(features: Features) -> Features:
    """``features`` two units narrower in every field."""
    return Features(patches=features.patches[..., :-2].copy(), pooled=features.pooled[:, :-2].copy(),
                    blocks={k: v[:, :-2].copy() for k, v in features.blocks.items()})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train, labels = _inliers(N_TRAIN, rng)
    test_in, _ = _inliers(N_TEST, rng)
    test_out = 0.3 + rng.normal(0, 0.05, (N_TEST, D))  # small and between the classes
    return (_features(train, rng), labels, _features(test_in, rng), _features(test_out, rng))


def _fit(name: str, train: Features, labels: np.ndarray) -> Scorer:
    scorer = get_scorer_class(name)(**_params(name))
    assert scorer.fit(train, labels) is scorer
    return scorer


@pytest.fixture(scope="module")
def fitted(data):
    train, labels, _, _ = data
    cache: dict[str, Scorer] = {}

    def get(name: str) -> Scorer:
        if name not in cache:
            cache[name] = _fit(name, train, labels)
        return cache[name]

    return get


SCORERS = available_scorers()


def test_registry_is_not_empty():
    assert {"patchcore", "softpatch", "tailedcore", "knn", "msp", "line"} <= set(SCORERS)


@pytest.mark.parametrize("name", SCORERS)
def test_class_declares_its_name_and_inputs(name):
    cls = get_scorer_class(name)
    assert issubclass(cls, Scorer) and cls.name == name
    assert cls.requires and set(cls.requires) <= {"patches", "pooled", "blocks"}
    assert set(cls.runtime_params) & set(cls.constructor_params()) <= {"progress", "patch_maps"}


@pytest.mark.parametrize("name", SCORERS)
def test_get_params_round_trips_through_the_constructor(name):
    cls = get_scorer_class(name)
    scorer = cls(**_params(name))
    params = scorer.get_params()
    assert "progress" not in params
    assert cls(**params).get_params() == params
    for key, value in _params(name).items():
        if key not in cls.runtime_params:
            assert params[key] == value, key


@pytest.mark.parametrize("name", SCORERS)
def test_construction_and_fit_leave_the_parameters_as_given(name, data, fitted):
    """scikit-learn discipline: parameters are stored as passed (defaults included) and
    neither the constructor nor ``fit`` rewrites them."""
    import inspect as pyinspect

    cls = get_scorer_class(name)
    defaults = {k: p.default for k, p in pyinspect.signature(cls.__init__).parameters.items()
                if k not in ("self", *cls.runtime_params) and p.default is not p.empty}
    assert {k: v for k, v in cls().get_params().items() if k in defaults} == defaults
    expected = {**cls(**_params(name)).get_params()}
    assert fitted(name).get_params() == expected


@pytest.mark.parametrize("name", SCORERS)
def test_score_before_fit_raises(name, data):
    scorer = get_scorer_class(name)(**_params(name))
    assert not scorer.is_fitted
    with pytest.raises(NotFittedError, match=r"\.score\(\) called before fit\(\)$"):
        scorer.score(data[2])


@pytest.mark.parametrize("name", SCORERS)
def test_score_shapes(name, data, fitted):
    _, _, test_in, _ = data
    result = fitted(name).score(test_in)
    assert result.image_scores.shape == (N_TEST,)
    assert np.isfinite(result.image_scores).all()
    if result.patch_scores is not None:
        assert "patches" in get_scorer_class(name).requires
        assert result.patch_scores.shape == (N_TEST, H, W)
    # scoring never learns: the same input scores the same twice
    np.testing.assert_array_equal(fitted(name).score(test_in).image_scores, result.image_scores)


@pytest.mark.parametrize("name", SCORERS)
def test_save_load_gives_identical_scores(name, data, fitted, tmp_path):
    _, _, test_in, test_out = data
    scorer = fitted(name)
    scorer.save(tmp_path / name)
    back = Scorer.load(tmp_path / name, progress=False)
    assert type(back) is type(scorer) and back.is_fitted
    assert back.get_params() == scorer.get_params()
    for feats in (test_in, test_out):
        a, b = scorer.score(feats), back.score(feats)
        np.testing.assert_array_equal(b.image_scores, a.image_scores)
        if a.patch_scores is not None:
            np.testing.assert_array_equal(b.patch_scores, a.patch_scores)


@pytest.mark.parametrize("name", SCORERS)
def test_planted_outliers_score_above_inliers(name, data, fitted):
    _, _, test_in, test_out = data
    scorer = fitted(name)
    inl, out = scorer.score(test_in).image_scores, scorer.score(test_out).image_scores
    assert out.min() > inl.max(), f"inliers {np.round(inl, 3)}, outliers {np.round(out, 3)}"


@pytest.mark.parametrize("name", SCORERS)
def test_non_finite_features_are_refused_at_fit_and_score(name, data, fitted):
    train, labels, test_in, _ = data
    bad = Features(patches=test_in.patches.copy(), pooled=test_in.pooled.copy(),
                   blocks={k: v.copy() for k, v in test_in.blocks.items()})
    field, arr = _field(name, bad)
    arr.reshape(len(bad), -1)[1, 0] = np.nan
    arr.reshape(len(bad), -1)[3, 2] = np.inf
    with pytest.raises(ValueError, match=rf"{field} features of 2 of {N_TEST} images hold NaN or Inf"):
        fitted(name).score(bad)
    with pytest.raises(ValueError, match=r"\.fit: .* hold NaN or Inf"):
        get_scorer_class(name)(**_params(name)).fit(bad, labels[:N_TEST])


def test_half_float_features_are_checked_without_overflow():
    # 300 x 512 values of 5..15: their float16 sum overflows to Inf, which read as "0 of 300
    # images hold NaN or Inf"; feature_norm = -||x||, here -sqrt(512 * 10^2)
    x = np.full((300, 512), 10.0, np.float16)
    s = get_scorer_class("feature_norm")().fit(Features(pooled=x))
    np.testing.assert_allclose(s.score(Features(pooled=x[:2])).image_scores, -np.sqrt(512) * 10, rtol=1e-6)
    x[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"pooled features of 1 of 300 images hold NaN or Inf"):
        s.score(Features(pooled=x))
    # finite values whose sum overflows even in float64 are not refused either
    assert get_scorer_class("feature_norm")().fit(Features(pooled=np.full((2, 2), 1e308))).is_fitted


@pytest.mark.parametrize("name", SCORERS)
def test_features_of_another_width_are_refused_at_score(name, data, fitted, tmp_path):
    _, _, test_in, _ = data
    field, _ = _field(name, test_in)
    narrow = _narrow(test_in)
    fitted(name).save(tmp_path / name)
    for scorer in (fitted(name), Scorer.load(tmp_path / name, progress=False)):  # saved with the scorer
        with pytest.raises(ValueError, match=rf"{field} features have width {D - 2}, the scorer was "
                                             rf"fitted on width {D}"):
            scorer.score(narrow)


def test_scorers_saved_without_their_widths_still_load(data, fitted, tmp_path):
    import json

    from anomaly_inspect.scorers.base import ScorerFormatError

    _, _, test_in, _ = data
    fitted("feature_norm").save(tmp_path / "m")
    meta_path = tmp_path / "m" / "scorer.json"
    meta = json.loads(meta_path.read_text())
    assert meta["input_widths"] == {"pooled": D}
    del meta["input_widths"]  # as written before the widths were saved: no width check
    meta_path.write_text(json.dumps(meta))
    back = Scorer.load(tmp_path / "m")
    np.testing.assert_array_equal(back.score(test_in).image_scores,
                                  fitted("feature_norm").score(test_in).image_scores)
    assert back.score(Features(pooled=np.full((1, 2), 3.0))).image_scores == pytest.approx([-np.sqrt(18)])
    meta["input_widths"] = {"pooled": "8"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ScorerFormatError, match="input_widths must map feature fields to widths"):
        Scorer.load(tmp_path / "m")


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_lof_filter_takes_patches_of_any_float_type(dtype):
    from anomaly_inspect.scorers.lof_filter import per_position_lof

    # one position, 4 images in 1-d: 0, 1, 2 and 10 (k = 1). Nearest other: d = 1, 1, 1, 8,
    # so lrd = 1, 1, 1, 1/8 and LOF = lrd(neighbour) / lrd = 1, 1, 1, 8 (the far one is 8)
    p = np.array([0.0, 1.0, 2.0, 10.0], dtype).reshape(4, 1, 1, 1)
    np.testing.assert_allclose(per_position_lof(p, k=1, projection_dim=None).ravel(), [1, 1, 1, 8], rtol=1e-5)
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(10, 2, 2, 200)).astype(dtype)  # projected to 128-d (float32)
    np.testing.assert_array_equal(per_position_lof(wide), per_position_lof(wide.astype(np.float32)))
    get_scorer_class("softpatch")(**_params("softpatch")).fit(Features(patches=wide))


def test_save_before_fit_and_a_wrong_runtime_switch_say_what_is_wrong(tmp_path, fitted):
    from anomaly_inspect.scorers.base import Scorer as Base

    with pytest.raises(NotFittedError, match=r"KNN.save\(\) called before fit\(\)"):
        get_scorer_class("knn")(**_params("knn")).save(tmp_path / "unfitted")
    assert not (tmp_path / "unfitted").exists()
    fitted("knn").save(tmp_path / "knn")
    with pytest.raises(TypeError, match=r"not runtime switches of KNN: \['foo'\]"):
        Base.load(tmp_path / "knn", foo=1)


def test_patchcore_score_without_patches_says_so(fitted, data):
    with pytest.raises(ValueError, match=r"PatchCore.score: needs patch features"):
        fitted("patchcore").score(Features(pooled=data[2].pooled))


def test_features_of_the_wrong_shape_are_refused_when_made():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"Features.pooled must be a \(N, D\) array, got shape \(3, 1, 8\)"):
        Features(pooled=rng.random((3, 1, 8)))
    with pytest.raises(ValueError, match=r"Features.patches must be a \(N, h, w, D\) array"):
        Features(patches=rng.random((3, 8)))
    with pytest.raises(ValueError, match=r"Features.pooled has 2 images, another field 3"):
        Features(patches=rng.random((3, 2, 2, 8)), pooled=rng.random((2, 8)))
    assert len(Features(patches=rng.random((0, 2, 2, 8)), pooled=rng.random((0, 8)))) == 0


@pytest.mark.parametrize("name", SCORERS)
def test_an_empty_batch_scores_to_no_scores(name, data, fitted):
    # feature_norm, nan, head_feature_norm, head_nan, l2norm and knn_nan could not reshape
    # (0, D) features to (0, -1)
    empty = Features(patches=np.zeros((0, H, W, D), np.float32), pooled=np.zeros((0, D), np.float32),
                     blocks={"final": np.zeros((0, D), np.float32)})
    assert fitted(name).score(empty).image_scores.shape == (0,)


LABEL_FREE = [n for n in SCORERS if "epochs" not in get_scorer_class(n).constructor_params()]


@pytest.mark.parametrize("name", LABEL_FREE)
def test_fit_batches_takes_n_images_as_an_upper_bound(name, data):
    # 18 of the 24 announced images arrive (the runner skips unreadable ones): the fit is that
    # of the 18, not "expected features of 24 images, got 18" after the whole extraction
    train, _, test_in, _ = data
    parts = [train.subset(np.arange(i, i + 6)) for i in range(0, 18, 6)]
    streamed = get_scorer_class(name)(**_params(name)).fit_batches(iter(parts), N_TRAIN)
    whole = get_scorer_class(name)(**_params(name)).fit(train.subset(np.arange(18)))
    np.testing.assert_allclose(streamed.score(test_in).image_scores, whole.score(test_in).image_scores,
                               rtol=1e-5)


@pytest.mark.parametrize("name", ["feature_norm", "knn", "mahalanobis", "softpatch"])
def test_fit_batches_with_no_images_says_so(name):
    with pytest.raises(ValueError, match=r"\.fit_batches: no training features arrived \(expected up "
                                         r"to 5 images\)"):
        get_scorer_class(name)(**_params(name)).fit_batches(iter([]), 5)


def test_a_refused_fit_leaves_a_fitted_scorers_widths(data, tmp_path):
    # the widths were recorded before the fit ran: a refused fit on narrower features left the
    # old state with the new widths, and score (and the saved scorer) refused the right ones
    import json

    train, _, test_in, _ = data
    knn = get_scorer_class("knn")(**_params("knn")).fit(train)
    expected = knn.score(test_in).image_scores
    narrow = Features(pooled=train.pooled[:1, :-2])
    with pytest.raises(ValueError, match="k=2 but only 1 training images"):
        knn.fit(narrow)
    with pytest.raises(ValueError, match="k=2 but only 1 training images"):
        knn.fit_batches(iter([narrow]), 1)
    np.testing.assert_array_equal(knn.score(test_in).image_scores, expected)
    knn.save(tmp_path / "knn")
    assert json.loads((tmp_path / "knn" / "scorer.json").read_text())["input_widths"] == {"pooled": D}
    np.testing.assert_array_equal(Scorer.load(tmp_path / "knn").score(test_in).image_scores, expected)
