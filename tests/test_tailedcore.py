"""TailSampler, per-position LOF filter, SoftPatch and TailedCore on hand-built features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_inspect.core import Features, FitContext, SharedResults
from anomaly_inspect.features.views import rotated_views, view_params
from anomaly_inspect.scorers import Scorer, build_scorer
from anomaly_inspect.scorers.lof_filter import local_outlier_factor, lof_keep_mask, per_position_lof
from anomaly_inspect.scorers.tail_sampler import (
    TailSampler,
    class_size_histogram,
    elbow,
    mass_cut,
    mode_vote,
    trim_min_thresholds,
)


def clusters(sizes, dim=16, spread=0.03, seed=0):
    """Tight clusters around orthogonal non-negative centres (like post-ReLU embeddings)."""
    rng = np.random.default_rng(seed)
    rows = [np.abs(np.eye(dim)[c] * 5 + rng.normal(0, spread, (n, dim))) for c, n in enumerate(sizes)]
    return np.concatenate(rows).astype(np.float32)


# -- TailSampler ---------------------------------------------------------------
def test_tail_sampler_finds_the_two_image_class():
    res = TailSampler().run(clusters([20, 20, 2]))
    np.testing.assert_array_equal(res.tail_indices, [40, 41])
    assert res.class_sizes[:40].min() > res.max_k
    assert res.histogram.sum() == 42
    assert res.is_tail.sum() == 2


def test_tail_sampler_order_does_not_matter():
    x = clusters([20, 20, 2], seed=1)
    perm = np.random.default_rng(3).permutation(len(x))
    res = TailSampler().run(x[perm])
    assert sorted(perm[res.tail_indices].tolist()) == [40, 41]


def test_tail_sampler_three_images_hand_checked():
    # two identical images and one orthogonal one: row 0 = [1, 1, 0] -> tau 1 -> set {0, 1};
    # row 2 -> set {2}. Sizes [2, 2, 1]; histogram [2, 1]; elbow 2, mass cut (0 images) -> 1.
    x = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    res = TailSampler().run(x)
    np.testing.assert_array_equal(res.class_sizes, [2, 2, 1])
    np.testing.assert_array_equal(res.histogram, [2, 1])
    assert res.max_k == 1
    np.testing.assert_array_equal(res.tail_indices, [2])


def test_trim_min_threshold_hand_checked():
    # one row, N = 4: quantised sorted [-1, .5, .75, 1]; h = cos(180/2) = 0;
    # U = [.5, .75, 1] -> floor(.85*3) = 2 -> U[-2] = .75 (a ceiling, 3, would give .5)
    s = np.array([[1.0, 0.8, 0.5, -1.0]] * 4)
    tau = trim_min_thresholds(s)
    assert tau[0] == pytest.approx(0.75)


def test_mode_vote_ties_go_to_smaller_size():
    b = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], bool)  # n = [2, 3, 1]
    np.testing.assert_array_equal(mode_vote(b), [2, 2, 1])  # col 0: {2, 3} tie -> 2


def test_histogram_elbow_and_mass_cut():
    np.testing.assert_array_equal(class_size_histogram([1, 1] + [17] * 40), [23, 17, 1, 1])
    assert elbow(np.array([23, 17, 1, 1])) == 1  # (2, 1) lies 7.3 below the chord, (1, 17) 1.3 above
    assert elbow(np.array([100, 90, 80, 5, 4])) == 80  # chord y = 100 - 24x: +14, +28, -23
    assert mass_cut(np.array([23, 17, 1, 1]), 0.15) == 1  # 6 images allowed: the two 1s fit
    assert mass_cut(np.array([100, 10, 5]), 0.15) == 10  # 16 allowed: 5 + 10 fit


def test_tail_sampler_scales_to_thousands():
    x = clusters([1500, 600, 8], dim=32)
    res = TailSampler().run(x)
    assert set(res.tail_indices.tolist()) == set(range(2100, 2108))


def test_tail_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="embedding"):
        TailSampler().run(np.zeros((0, 4)))


# -- LOF -----------------------------------------------------------------------
def test_lof_matches_sklearn():
    from sklearn.neighbors import LocalOutlierFactor

    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    ref = -LocalOutlierFactor(n_neighbors=6).fit(x).negative_outlier_factor_
    np.testing.assert_allclose(local_outlier_factor(x, 6), ref, rtol=1e-4)


def test_lof_filter_removes_planted_outliers():
    rng = np.random.default_rng(0)
    patches = rng.normal(0, 0.1, (40, 4, 4, 24)).astype(np.float32)
    planted = [(3, 1, 2), (17, 0, 0), (29, 3, 3), (35, 2, 1)]
    for i, y, x in planted:
        patches[i, y, x] += 3.0
    scores = per_position_lof(patches, k=6)
    for i, y, x in planted:
        assert scores[i, y, x] == scores[:, y, x].max()
    keep = lof_keep_mask(patches, k=6, discard=0.15)
    assert not any(keep[p] for p in planted)
    assert keep.mean() == pytest.approx(0.85, abs=0.01)


# -- scorers -------------------------------------------------------------------
def lt_features(seed=0):
    """Head class (30 images) with one noisy image, tail class (2 images), 4x4 patches."""
    rng = np.random.default_rng(seed)
    head = rng.normal(0, 0.05, (30, 4, 4, 8)) + np.eye(8)[0]
    head[5, 2, 2] += 2.0  # a defect injected into training
    tail = rng.normal(0, 0.05, (2, 4, 4, 8)) + np.eye(8)[1]
    patches = np.concatenate([head, tail]).astype(np.float32)
    pooled = np.concatenate([np.abs(rng.normal(0, 0.02, (30, 8)) + np.eye(8)[0]),
                             np.abs(rng.normal(0, 0.02, (2, 8)) + np.eye(8)[1])]).astype(np.float32)
    return Features(patches, pooled)


def test_softpatch_keeps_the_injected_defect_out():
    feats = lt_features()
    sp = build_scorer("softpatch", coreset_ratio=1.0, progress=False).fit(feats)
    pc = build_scorer("patchcore", coreset_ratio=1.0, progress=False).fit(feats)
    defect = feats.patches[5, 2, 2][None, None, None]
    assert pc.score(Features(defect)).image_scores[0] == pytest.approx(0, abs=1e-3)
    assert sp.score(Features(defect)).image_scores[0] > 1.0



@pytest.mark.parametrize("name", ["softpatch", "tailedcore"])
def test_batch_by_batch_fit_is_the_whole_method_not_plain_patchcore(name):
    """fit_batches (what `fit` and `evaluate` call with one scorer) must filter by LOF (and
    add TailedCore's tail) as fit does; it used to be PatchCore's streaming fit."""
    from anomaly_inspect.pipeline.remote_fit import check_distributable

    feats = lt_features()
    whole = build_scorer(name, coreset_ratio=0.5, progress=False).fit(feats)
    batched = build_scorer(name, coreset_ratio=0.5, progress=False).fit_batches(
        [feats.subset(range(0, 16)), feats.subset(range(16, 32))], 32)
    np.testing.assert_array_equal(batched.memory_bank, whole.memory_bank)
    timings = ("index_seconds",)  # wall seconds: equal fits need not take equal time
    assert ({k: v for k, v in batched.fit_summary().items() if k not in timings}
            == {k: v for k, v in whole.fit_summary().items() if k not in timings})
    defect = Features(feats.patches[5, 2, 2][None, None, None])
    assert batched.score(defect).image_scores[0] > 1.0  # the LOF filter kept it out
    with pytest.raises(ValueError, match=f"not '{name}'"):
        check_distributable(batched)

def test_tailedcore_memory_is_union_of_head_and_tail():
    feats = lt_features()
    calls = []

    class Views:
        views_per_image = 3

        def iter_views(self, idx):
            calls.append(list(idx))
            base = np.repeat(feats.patches[list(idx)], 3, axis=0)  # 3 distinct "views" per image
            yield Features(base + np.random.default_rng(1).normal(0, 0.01, base.shape).astype(np.float32))

    tc = build_scorer("tailedcore", coreset_ratio=0.5, progress=False)
    tc.fit(feats, context=FitContext(views=Views()))
    assert calls == [[30, 31]]
    np.testing.assert_array_equal(tc.tail_result.tail_indices, [30, 31])
    n_tail_patches = 2 * 16 * (1 + 3)
    n_head_kept = int(round(32 * 16 * 0.85))
    assert tc.tail_size == round(n_tail_patches * 0.5)
    assert abs(tc.head_size - round(n_head_kept * 0.5)) <= 1
    assert tc.bank_size == tc.tail_size + tc.head_size


def test_tailedcore_without_views_and_save_load(tmp_path):
    feats = lt_features(1)
    tc = build_scorer("tailedcore", coreset_ratio=0.25, progress=False).fit(feats)
    assert tc.tail_size == round(2 * 16 * 0.25)
    tc.save(tmp_path / "m")
    back = Scorer.load(tmp_path / "m")
    np.testing.assert_allclose(back.score(feats).image_scores, tc.score(feats).image_scores)
    np.testing.assert_array_equal(back.tail_result.tail_indices, tc.tail_result.tail_indices)
    assert (back.tail_size, back.head_size) == (tc.tail_size, tc.head_size)


def test_tailedcore_patch_mean_embedding_and_errors():
    feats = lt_features(2)
    tc = build_scorer("tailedcore", coreset_ratio=0.25, embedding="patch_mean", progress=False)
    tc.fit(Features(feats.patches))
    np.testing.assert_array_equal(tc.tail_result.tail_indices, [30, 31])
    with pytest.raises(ValueError, match="pooled"):
        build_scorer("tailedcore", progress=False).fit(Features(feats.patches))
    with pytest.raises(ValueError, match="embedding"):
        build_scorer("tailedcore", embedding="nope")


# -- views ---------------------------------------------------------------------
def test_rotated_views_count_and_geometry():
    assert len(view_params("rot15flip")) == 47
    assert len(view_params("rot30flip")) == 23
    assert len(view_params("rotflip")) == 7
    img = torch.zeros(1, 3, 8, 8)
    img[..., 0, 0] = 1.0  # top-left corner
    views = list(rotated_views(img, "rotflip"))
    assert len(views) == 7 and all(v.shape == img.shape for v in views)
    assert views[0][0, 0, 0, 7] == 1.0  # (0 deg, h-flip): top-right
    smooth = torch.linspace(0, 1, 32).repeat(1, 3, 32, 1)
    for v in rotated_views(smooth, "rot30flip"):
        assert v.shape == smooth.shape and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="view kind"):
        view_params("spin")


def test_lof_score_reuse_gives_the_same_memory(monkeypatch):
    from anomaly_inspect.scorers import lof_filter

    feats = lt_features(3)
    shared = SharedResults()
    sp = build_scorer("softpatch", coreset_ratio=0.5, progress=False)
    sp.fit(feats, context=FitContext(shared=shared))
    tc = build_scorer("tailedcore", coreset_ratio=0.5, progress=False)
    assert tc.lof_key == sp.lof_key and shared.get(sp.lof_key) is not None
    computed = []
    real = lof_filter.per_position_lof
    monkeypatch.setattr(lof_filter, "per_position_lof",
                        lambda *a, **k: computed.append(1) or real(*a, **k))
    tc.fit(feats, context=FitContext(shared=shared))
    assert computed == []  # the shared scores were reused, not recomputed
    ref = build_scorer("tailedcore", coreset_ratio=0.5, progress=False).fit(feats)
    assert computed == [1]
    np.testing.assert_array_equal(tc.memory_bank, ref.memory_bank)


class _StreamingViews:
    """A view source: 3 noisy "views" per image, one image per batch (or all in one batch)."""

    views_per_image = 3

    def __init__(self, feats, one_batch=False):
        self.feats, self.streamed, self.one_batch = feats, [], one_batch

    def _views(self, i):
        base = np.repeat(self.feats.patches[[i]], 3, axis=0)
        return base + np.random.default_rng(i).normal(0, 0.01, base.shape).astype(np.float32)

    def iter_views(self, idx):
        self.streamed.extend(int(i) for i in idx)
        if self.one_batch:
            yield Features(np.concatenate([self._views(i) for i in idx]))
        else:
            for i in idx:
                yield Features(self._views(i))


def _with_views(views):
    return FitContext(views=views)


def test_tailedcore_streams_views_batch_by_batch():
    feats = lt_features()
    src = _StreamingViews(feats)
    tc = build_scorer("tailedcore", coreset_ratio=0.5, progress=False)
    tc.fit(feats, context=_with_views(src))
    assert src.streamed == [30, 31]
    # coreset of the tail images' own 32 patches (16) + of each image's 48 view patches (24 each)
    assert tc.tail_size == 16 + 24 + 24
    assert tc.bank_size == tc.tail_size + tc.head_size
    # ratio 1: streaming keeps exactly the patches that gathering keeps
    full = build_scorer("tailedcore", coreset_ratio=1.0, progress=False)
    a = full.fit(feats, context=_with_views(_StreamingViews(feats))).memory_bank
    b = full.fit(feats, context=_with_views(_StreamingViews(feats, one_batch=True))).memory_bank
    np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(b, axis=0))
    # the exact coreset (chunk_size None) streams too, and equals gathering all views
    exact = build_scorer("tailedcore", coreset_ratio=0.5, chunk_size=None, progress=False)
    a = exact.fit(feats, context=_with_views(_StreamingViews(feats))).memory_bank
    b = exact.fit(feats, context=_with_views(_StreamingViews(feats, one_batch=True))).memory_bank
    np.testing.assert_array_equal(a, b)


# -- SoftPatch soft re-weighting ---------------------------------------------------
def test_item_weights_multiply_the_distance_by_the_root_of_the_nearest_items_weight_by_hand():
    from anomaly_inspect.scorers.patchcore import PatchCore

    pc = PatchCore(index="flat", progress=False)
    pc._set_bank(np.array([[0, 0], [10, 0]], np.float32), np.array([4.0, 0.25], np.float32))
    # (1,0): nearest (0,0) at 1, weight 4 -> 1 x 2 = 2; (7,0): nearest (10,0) at 3, weight 0.25
    # -> 3 x 0.5 = 1.5 (the weighted distance to (0,0) would be 14: the match is by distance,
    # then weighted)
    res = pc.score(Features(patches=np.array([[[[1, 0], [7, 0]]]], np.float32)))
    np.testing.assert_allclose(res.patch_scores[0, 0], [2.0, 1.5], rtol=1e-6)
    assert res.image_scores[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="3 item weights for a bank of 2"):
        pc._set_bank(np.zeros((2, 2), np.float32), np.ones(3, np.float32))


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_soft_weights_rank_as_the_published_squared_distance_times_weight(index):
    """SoftPatch's code scores ||x - m||^2 x LOF(m); d x sqrt(LOF) is its root. The old d x LOF
    ranked as d^2 x LOF^2 and put B above A here."""
    sp = build_scorer("softpatch", soft_weight=True, index=index, progress=False)
    sp._set_bank(np.array([[0, 0], [10, 0]], np.float32), np.array([1.0, 1.5], np.float32))
    a, b = [2, 0], [11.5, 0]  # A: d 2 to (0,0), weight 1; B: d 1.5 to (10,0), weight 1.5
    scores = sp.score(Features(np.array([a, b], np.float32)[:, None, None, :])).image_scores
    # published: A 2^2 x 1 = 4 > B 1.5^2 x 1.5 = 3.375; here A 2, B 1.5 x sqrt(1.5) = 1.837
    np.testing.assert_allclose(scores, [2.0, 1.5 * np.sqrt(1.5)], rtol=1e-6)
    assert scores[0] > scores[1]  # (d x w would give A 2 < B 2.25)


def test_soft_weighted_image_scores_are_exact_with_a_poor_approximate_index():
    from anomaly_inspect.scorers.patchcore import PatchCore

    rng = np.random.default_rng(1)
    bank = rng.standard_normal((3000, 32)).astype(np.float32)
    weights = rng.uniform(0.8, 1.6, len(bank)).astype(np.float32)
    test = Features(patches=(1.2 * rng.standard_normal((20, 16, 16, 32))).astype(np.float32))
    exact = PatchCore(index="flat", progress=False)
    exact._set_bank(bank, weights)
    approx = PatchCore(index="hnsw", progress=False)
    approx._set_bank(bank, weights)
    approx._nn.index.hnsw.efSearch = 4
    ref, res = exact.score(test), approx.score(test)
    assert not np.allclose(res.patch_scores, ref.patch_scores)
    np.testing.assert_allclose(res.image_scores, ref.image_scores, rtol=1e-5)


def test_softpatch_soft_weights_are_the_kept_items_lof_and_survive_save_load(tmp_path):
    feats = lt_features(4)
    sp = build_scorer("softpatch", coreset_ratio=0.5, soft_weight=True, progress=False).fit(feats)
    scores = per_position_lof(feats.patches, k=6)
    keep = lof_keep_mask(feats.patches, k=6, discard=0.15)
    kept, lof = feats.patches[keep], scores[keep]
    # every memory item is a kept training patch and carries that patch's LOF
    for item, w in zip(sp.memory_bank, sp.item_weights, strict=True):
        j = np.flatnonzero((kept == item).all(axis=1))
        assert len(j) == 1 and w == pytest.approx(lof[j[0]], rel=1e-6)
    plain = build_scorer("softpatch", coreset_ratio=0.5, progress=False).fit(feats)
    assert plain.item_weights is None
    np.testing.assert_array_equal(plain.memory_bank, sp.memory_bank)
    sp.save(tmp_path / "sp")
    loaded = Scorer.load(tmp_path / "sp")
    assert loaded.soft_weight is True
    np.testing.assert_array_equal(loaded.item_weights, sp.item_weights)
    test = lt_features(5)
    np.testing.assert_allclose(loaded.score(test).image_scores, sp.score(test).image_scores)
    # each patch score is the distance to the nearest item times the root of that item's LOF
    q = test.patches.reshape(-1, test.patches.shape[-1])
    d = np.linalg.norm(q[:, None] - sp.memory_bank[None], axis=-1)
    expected = d.min(1) * np.sqrt(sp.item_weights[d.argmin(1)])
    np.testing.assert_allclose(sp.score(test).patch_scores.reshape(-1), expected, rtol=1e-5)


def test_bad_lof_discard_fails_before_any_lof_work(monkeypatch):
    import anomaly_inspect.scorers.lof_filter as lof_module

    def no_lof(*args, **kwargs):
        raise AssertionError("LOF computed before the discard ratio was checked")

    monkeypatch.setattr(lof_module, "per_position_lof", no_lof)
    with pytest.raises(ValueError, match=r"softpatch: lof_discard must be a number in \[0, 1\), got 1.0"):
        build_scorer("softpatch", lof_discard=1.0, progress=False)  # at construction
    with pytest.raises(ValueError, match=r"LOF filter: discard must be a number in \[0, 1\), got -0.1"):
        lof_keep_mask(lt_features(0).patches, discard=-0.1)


def test_lof_ties_keep_the_share_asked_for_not_nothing():
    from anomaly_inspect.scorers.lof_filter import keep_below_quantile

    assert keep_below_quantile(np.ones((4, 2, 2), np.float32), 0.15).sum() == 13  # floor(0.85 x 16)
    tied = np.array([0.1, 0.5, 0.5, 0.5, 0.5], np.float32).reshape(5, 1, 1)
    np.testing.assert_array_equal(keep_below_quantile(tied, 0.4).ravel(), [1, 1, 1, 0, 0])
    distinct = np.random.default_rng(0).random((30, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(keep_below_quantile(distinct, 0.15),
                                  distinct < np.quantile(distinct, 0.85))
    same = Features(np.repeat(lt_features().patches[:1], 10, axis=0))  # ten identical images
    sp = build_scorer("softpatch", coreset_ratio=0.5, progress=False).fit(same)
    assert sp.bank_size > 0 and sp.score(same).image_scores.max() == pytest.approx(0, abs=1e-3)


def test_tail_result_survives_save_load_and_older_states_still_load(tmp_path):
    feats = lt_features(1)
    tc = build_scorer("tailedcore", coreset_ratio=0.25, progress=False).fit(feats)
    r = tc.tail_result
    np.testing.assert_array_equal(r.tail_indices, [30, 31])
    tc.save(tmp_path / "m")
    back = Scorer.load(tmp_path / "m").tail_result
    assert back.max_k == r.max_k
    np.testing.assert_array_equal(back.histogram, r.histogram)
    np.testing.assert_array_equal(back.thresholds, r.thresholds)
    np.testing.assert_array_equal(back.class_sizes, r.class_sizes)
    # a state saved before histogram / thresholds / max_k were kept
    state = tc.get_state()
    for key in ("tail_thresholds", "tail_histogram", "tail_max_k"):
        del state[key]
    old = build_scorer("tailedcore", progress=False)
    old.set_state(state)
    assert old.tail_result.max_k == r.class_sizes[[30, 31]].max()
    assert old.tail_result.histogram.size == 0 and not old.tail_result.thresholds.any()
    np.testing.assert_array_equal(old.tail_result.tail_indices, [30, 31])


def test_lof_filter_is_the_one_lof_step_of_softpatch_and_lof_keep_mask(monkeypatch):
    from anomaly_inspect.scorers import lof_filter as module

    patches = lt_features(2).patches
    scores = per_position_lof(patches, k=6)
    keep, got = module.lof_filter(patches, 6, 0.15)
    np.testing.assert_array_equal(got, scores)
    np.testing.assert_array_equal(keep, scores < np.quantile(scores, 0.85))
    np.testing.assert_array_equal(lof_keep_mask(patches, 6, 0.15), keep)
    calls = []
    monkeypatch.setattr(module, "per_position_lof", lambda *a: calls.append(1) or scores)
    keep0, none = module.lof_filter(patches, 6, 0.0)  # nothing to discard: no LOF, all kept
    assert none is None and keep0.all() and calls == []
    _, weights = module.lof_filter(patches, 6, 0.0, need_scores=True)  # soft weights need it
    assert weights is scores and calls == [1]
    given = np.random.default_rng(0).random(patches.shape[:3]).astype(np.float32)
    keep_given, same = module.lof_filter(patches, 6, 0.5, scores=given)  # reused as they are
    assert same is given and calls == [1] and keep_given.sum() == patches[..., 0].size // 2
    sp = build_scorer("softpatch", coreset_ratio=1.0, progress=False)
    sp.fit(Features(patches))
    assert calls == [1, 1] and sp.bank_size == keep.sum()  # SoftPatch's LOF came from here


# -- padding in the per-position LOF -------------------------------------------------
def test_per_position_lof_leaves_padding_out_by_hand():
    # 5 images, 1 x 2 positions, D = 1, k = 1, no projection. Position 0: every image on it.
    # Position 1: images 0-2 at 0, 1, 3 and images 3-4 padding (two identical fill vectors).
    # Valid rows alone: nearest distances 1, 1, 2 = k-distances; reach 1, 1, 2 -> lrd 1, 1, 0.5
    # -> LOF 1, 1, 2 (row 2: lrd of its neighbour (1) / its own (0.5)); padding scores 1.
    patches = np.array([[[[0.0], [0.0]]], [[[1.0], [1.0]]], [[[3.0], [3.0]]],
                        [[[4.0], [1.001]]], [[[9.0], [1.001]]]], np.float32)
    valid = np.ones((5, 1, 2), bool)
    valid[3:, 0, 1] = False
    got = per_position_lof(patches, k=1, projection_dim=None, valid=valid)
    np.testing.assert_allclose(got[:, 0, 1], [1, 1, 2, 1, 1], rtol=1e-5)
    plain = per_position_lof(patches, k=1, projection_dim=None)
    np.testing.assert_array_equal(got[:, 0, 0], plain[:, 0, 0])  # all valid: as without a mask
    # with the padding taking part, its zero k-distance makes row 2 look like a huge outlier
    assert plain[2, 0, 1] > 1e6
    with pytest.raises(ValueError, match="valid mask of shape"):
        per_position_lof(patches, valid=valid[:, :, :1])


def test_padding_no_longer_keeps_a_defect_and_discards_normal_patches():
    from anomaly_inspect.scorers.lof_filter import lof_filter

    rng = np.random.default_rng(0)
    patches = rng.normal(size=(40, 1, 4, 32)).astype(np.float32)
    valid = np.ones((40, 1, 4), bool)
    # columns 2, 3 of images 0-11 are padding: near-identical fill vectors
    patches[:12, 0, 2:] = rng.normal(0, 1e-3, (12, 2, 32))
    valid[:12, 0, 2:] = False
    patches[20, 0, 0] += 6.0  # a defect where no image is padded
    keep, scores = lof_filter(patches, 6, 0.15, valid=valid, need_scores=True)
    assert not keep[20, 0, 0]  # (before the fix: kept, LOF 5.3 against ~700 next to padding)
    assert np.median(scores[valid[:, 0, 2], 0, 2]) < 1.5  # (before: 673)
    assert (scores[~valid] == 1).all() and not keep[~valid].any()
    assert keep[valid].sum() == int(np.floor(0.85 * valid.sum()))


# -- TailedCore's memory cap ---------------------------------------------------------
def test_bank_caps_split_max_bank_items_in_proportion_by_hand():
    tc = build_scorer("tailedcore", coreset_ratio=0.5, max_bank_items=10, progress=False)
    # targets 0.5 x 400 = 200 (head), 0.5 x 100 = 50 (tail): 10 x 200 / 250 = 8 and 2
    assert tc.bank_caps(400, 100) == (8, 2)
    assert tc.bank_caps(10, 6) == (10, 10)  # targets 5 + 3 fit: each its own target
    tc.tail_coreset_ratio = 0.1  # targets 200, 10: 10 x 200 / 210 = 9.5 -> 10, tail at least 1
    assert tc.bank_caps(400, 100) == (9, 1)
    tc.max_bank_items = 1
    assert tc.bank_caps(400, 100) == (1, 0)
    tc.max_bank_items = None
    assert tc.bank_caps(400, 100) == (None, None)


def test_max_bank_items_caps_the_whole_tailedcore_memory():
    feats = lt_features()
    free = build_scorer("tailedcore", coreset_ratio=0.5, progress=False).fit(feats)
    assert free.tail_size == 16  # images 30, 31: 0.5 x 32 patches
    capped = build_scorer("tailedcore", coreset_ratio=0.5, max_bank_items=10, progress=False).fit(feats)
    # head target 0.5 x 435 kept patches = 218 (floor(0.85 x 512) = 435), tail 16:
    # 10 x 218 / 234 = 9.3 -> head 9, tail 1 (before the fix: 10 + 10)
    assert (capped.head_size, capped.tail_size, capped.bank_size) == (9, 1, 10)
    assert len(capped.provenance) == 10
    one = build_scorer("tailedcore", coreset_ratio=0.5, max_bank_items=1, progress=False).fit(feats)
    assert (one.head_size, one.tail_size) == (1, 0)
    roomy = build_scorer("tailedcore", coreset_ratio=0.5, max_bank_items=1000, progress=False)
    np.testing.assert_array_equal(roomy.fit(feats).memory_bank, free.memory_bank)


# -- LOF discard ties ----------------------------------------------------------------
def test_lof_discard_keeps_at_least_one_patch():
    from anomaly_inspect.scorers.lof_filter import keep_below_quantile

    # two images, one patch each: LOF 1 and 1 (each the other's only neighbour); discard 0.9:
    # nothing below the cut, floor(0.1 x 2) = 0 -> one patch kept, not none
    assert keep_below_quantile(np.ones((2, 1, 1), np.float32), 0.9).sum() == 1
    feats = Features(np.array([[[[0.0, 1.0]]], [[[1.0, 0.0]]]], np.float32),
                     np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    for name in ("softpatch", "tailedcore"):  # before: "no rows were added to the coreset"
        scorer = build_scorer(name, lof_discard=0.9, progress=False).fit(feats)
        assert scorer.bank_size >= 1


# -- TailSampler's mass cut ----------------------------------------------------------
def test_tail_mass_is_not_a_hard_bound_when_no_class_fits():
    # classes of 10 and 5 images: 15 % of 15 = 2 images; not even the 5-image class fits,
    # so the cut falls back to the smallest class size, 5 (the spec's / official code's rule)
    assert mass_cut(np.array([10, 5]), 0.15) == 5
    # three images (see test_tail_sampler_three_images_hand_checked): budget 0 images, the tail
    # is still the 1-image class, a third of the images
    res = TailSampler(tail_mass=0.15).run(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32))
    assert len(res.tail_indices) / 3 > 0.15


# TailSampler's elbow, checked by hand.
def test_tail_sampler_cut_is_the_elbow_when_below_the_mass_cut():
    """Classes of 58, 41, 29, 19, 1 and 1 images: the 15 % mass cut (22 images) lets 19 in,
    the histogram's elbow is 1; the cut-off is the smaller (1): only the two single images."""
    res = TailSampler().run(clusters([58, 41, 29, 19, 1, 1], dim=32))
    assert res.max_k == 1
    np.testing.assert_array_equal(res.tail_indices, [147, 148])
