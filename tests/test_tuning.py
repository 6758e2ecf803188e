"""The selector's parts on hand-checked cases: Borda, keep-the-default, normal-calibrated fusion,
fold plan, candidate grids, and stage maps from the cache equal to the extractor's features."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.evaluation.fusion import NormalCalibration, fuse
from anomaly_inspect.tuning.candidates import Candidate, candidate_grid, changed_axis, combinations
from anomaly_inspect.tuning.rank import beats_default, borda_points, trimmed_borda
from anomaly_inspect.tuning.tune import TuneSettings, ascent_round, ensemble_validation, fold_plan

# ----------------------------------------------------------------------------- Borda


def test_borda_points_count_beaten_candidates_ties_half():
    pts = borda_points(np.array([[0.9, 0.8, 0.8], [0.5, 0.7, 0.6]]))
    np.testing.assert_array_equal(pts, [[2, 0.5, 0.5], [0, 2, 1]])


def test_trimmed_borda_drops_an_outlier_judge():
    # 10 judges: candidate 1 wins 9 of them; one wild judge puts candidate 0 first by far
    scores = np.tile([0.80, 0.90, 0.70], (10, 1))
    scores[0] = [0.99, 0.10, 0.20]
    plain = trimmed_borda(scores, trim=0.0)
    np.testing.assert_allclose(plain, [(9 * 1 + 2) / 10, (9 * 2 + 0) / 10, (0 + 1) / 10])
    trimmed = trimmed_borda(scores, trim=0.1)  # one judge dropped at each end, per candidate
    np.testing.assert_allclose(trimmed, [1.0, 2.0, 0.0])


def test_trimmed_borda_never_trims_everything():
    scores = np.array([[0.1, 0.2], [0.3, 0.1]])
    np.testing.assert_allclose(trimmed_borda(scores, trim=0.5), [0.5, 0.5])


# ----------------------------------------------------------------------------- keep the default


def test_default_kept_when_gain_within_fold_noise():
    folds = np.array([[0.90, 0.95], [0.90, 0.88], [0.90, 0.93]])  # gains 0.05, -0.02, 0.03
    d = beats_default(folds, borda=np.array([0.0, 1.0]))
    assert d.winner == 1 and d.chosen == 0
    assert d.margin == pytest.approx(0.02) and d.noise == pytest.approx(np.std([0.05, -0.02, 0.03], ddof=1))
    assert "default kept" in d.reason


def test_winner_taken_when_gain_beats_fold_noise():
    folds = np.array([[0.90, 0.95], [0.85, 0.91], [0.92, 0.96]])  # gains 0.05, 0.06, 0.04
    d = beats_default(folds, borda=np.array([0.0, 1.0]))
    assert d.chosen == 1 and d.margin == pytest.approx(0.05) and d.noise == pytest.approx(0.01)


def test_default_ranked_first_is_kept_without_a_test():
    d = beats_default(np.array([[0.9, 0.8]] * 3), borda=np.array([1.0, 0.0]))
    assert d.chosen == d.winner == 0 and d.reason == "the default ranks first"


# ----------------------------------------------------------------------------- fusion


def test_normal_calibration_median_and_mad():
    cal = NormalCalibration.fit(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert cal.median == 3.0 and cal.mad == pytest.approx(1.4826)  # |dev| = 2,1,0,1,97 -> 1
    np.testing.assert_allclose(cal(np.array([3.0, 4.4826])), [0.0, 1.0])


def test_normal_calibration_constant_scores_do_not_divide_by_zero():
    cal = NormalCalibration.fit(np.array([2.0, 2.0, 2.0, 2.0]))
    assert cal.mad == 1.0


def test_fusion_puts_members_on_one_scale():
    # member A's scores are 100x member B's; raw averaging would ignore B
    a_norm, b_norm = np.array([100.0, 110.0, 90.0, 105.0, 95.0]), np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    cals = [NormalCalibration.fit(a_norm), NormalCalibration.fit(b_norm)]
    assert cals[0].median == 100.0 and cals[1].median == 1.0
    assert cals[0].mad == pytest.approx(100 * cals[1].mad)
    # image 0 is anomalous for B only, image 1 for A only, by the same number of MADs
    fused = fuse([np.array([100.0, 130.0]), np.array([1.3, 1.0])], cals)
    np.testing.assert_allclose(fused[0], fused[1])
    np.testing.assert_allclose(fused, [0.3 / (2 * cals[1].mad)] * 2)
    with pytest.raises(ValueError, match="one calibration per member"):
        fuse([a_norm], cals)


def test_ensemble_validation_uses_other_folds_normals_only():
    folds, families = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])
    # member A: normals [0, 2] in both folds; member B: normals [0, 2] in fold 0, [-1000, 1000]
    # in fold 1. Fold 0's anomaly is high for A, very low for B.
    # (one anomalous copy per held-out image, so two per fold)
    raw = [{0: (np.array([0.0, 2.0]), np.array([2.2, 2.2])), 1: (np.array([0.0, 2.0]), np.array([3.0, 3.0]))},
           {0: (np.array([0.0, 2.0]), np.array([-5.0, -5.0])),
            1: (np.array([-1000.0, 1000.0]), np.array([0.0, 0.0]))}]
    out = ensemble_validation([0, 1], raw, folds, families, ["cutpaste"])
    # fold 0 standardised by fold 1's normals: B's MAD is huge, so B barely counts and A's high
    # score ranks the anomaly first (1.0). With fold 0's own statistics it would rank last (0.0).
    assert out["fold0/cutpaste"] == 1.0
    # fold 1 by fold 0's normals: fused normals about -338 and 337, the anomaly 0.34: between
    assert out["fold1/cutpaste"] == 0.5


# ----------------------------------------------------------------------------- folds, candidates


def test_fold_plan_partitions_and_balances():
    s = TuneSettings(n_folds=3, max_images=50)
    chosen, folds, families = fold_plan(80, s)
    assert len(chosen) == 50 and len(set(chosen)) == 50 and (np.diff(chosen) > 0).all()
    assert sorted(np.bincount(folds)) == [16, 17, 17]
    assert set(np.bincount(families)) == {10}  # 5 families x 10
    again = fold_plan(80, s)
    assert all(np.array_equal(a, b) for a, b in zip((chosen, folds, families), again, strict=True))
    other = fold_plan(80, TuneSettings(n_folds=3, max_images=50, seed=1))
    assert not np.array_equal(folds, other[1])


def test_candidate_grids():
    base = ModelConfig()
    compact = candidate_grid("compact", base)
    assert compact[0].name == "lite0-320-8+16-rows-stretch" and compact[0] == Candidate.of(base)
    assert len(compact) == len(set(compact)) == 11
    assert {c.backbone for c in compact} == {f"tf_efficientnet_lite{i}" for i in range(3)}
    assert {c.image_size for c in compact} == {256, 320, 384, 448}
    assert {c.strides for c in compact} == {(8, 16), (4, 8, 16), (8, 16, 32)}
    assert {c.embedding for c in compact} == {"rows", "full", "mean"}
    assert {c.resize for c in compact} == {"stretch", "pad"}
    assert len({c.extraction for c in compact}) == 7
    full = candidate_grid("full", base)
    assert len(full) == len(set(full)) == 216 and full[0] == compact[0]
    with pytest.raises(ValueError, match="unknown candidate grid"):
        candidate_grid("huge", base)


def test_ascent_grid_starts_as_compact_and_combines_winners_by_pairs_and_all():
    base = ModelConfig()
    assert candidate_grid("ascent", base) == candidate_grid("compact", base)
    d = Candidate.of(base)
    lite2, big, mean = (Candidate.parse(n) for n in ("lite2-320-8+16-rows-stretch",
                                                     "lite0-448-8+16-rows-stretch",
                                                     "lite0-320-8+16-mean-stretch"))
    assert [changed_axis(c, d) for c in (lite2, big, mean, d)] == ["backbone", "image_size", "embedding", None]
    assert changed_axis(Candidate.parse("lite2-448-8+16-rows-stretch"), d) is None  # two changes
    assert [c.name for c in combinations(d, [lite2, big])] == ["lite2-448-8+16-rows-stretch"]
    assert [c.name for c in combinations(d, [lite2, big, mean])] == [
        "lite2-448-8+16-rows-stretch", "lite2-320-8+16-mean-stretch", "lite0-448-8+16-mean-stretch",
        "lite2-448-8+16-mean-stretch"]
    with pytest.raises(ValueError, match="different settings"):
        combinations(d, [lite2, Candidate.parse("lite1-320-8+16-rows-stretch")])


def test_ascent_round_takes_per_setting_the_best_change_that_beats_fold_noise():
    d, lite1, lite2, big, mean, pad = (Candidate.parse(n) for n in (
        "lite0-320-8+16-rows-stretch", "lite1-320-8+16-rows-stretch", "lite2-320-8+16-rows-stretch",
        "lite0-448-8+16-rows-stretch", "lite0-320-8+16-mean-stretch", "lite0-320-8+16-rows-pad"))
    cands = [d, lite1, lite2, big, mean, pad]
    folds = [[0.80, 0.82, 0.78],   # default
             [0.83, 0.84, 0.81],   # lite1: +0.027 mean, sd 0.006 -> beats noise
             [0.86, 0.87, 0.84],   # lite2: +0.057 -> the better backbone
             [0.90, 0.80, 0.70],   # 448: +0.000 mean -> no
             [0.85, 0.86, 0.83],   # mean: +0.047 -> yes
             [0.81, 0.79, 0.82]]   # pad: +0.007, sd 0.025 -> within noise
    assert [c.name for c in ascent_round(cands, folds, d)] == ["lite2-320-8+16-mean-stretch"]
    # one winner: nothing to combine
    assert ascent_round(cands[:3], folds[:3], d) == []


def test_ascent_round_a_larger_gain_within_its_noise_does_not_stop_a_smaller_one_beyond_it():
    """The rule as coded and documented since 2026-12-04 (and as the published runs used it):
    screw's ascent run, fold AUROCs from its JSON. 448 px gains more (0.0079) than 384 px
    (0.0074) but within its noise (0.0082), 384 px beyond its own (0.0049): 384 px is taken."""
    d, lite2, big, mid = (Candidate.parse(n) for n in (
        "lite0-320-8+16-rows-stretch", "lite2-320-8+16-rows-stretch", "lite0-448-8+16-rows-stretch",
        "lite0-384-8+16-rows-stretch"))
    folds = [[0.8973, 0.8767, 0.916], [0.9041, 0.8852, 0.9243], [0.9082, 0.8909, 0.9147],
             [0.9026, 0.8897, 0.9199]]
    assert [c.name for c in ascent_round([d, lite2, big, mid], folds, d)] == ["lite2-384-8+16-rows-stretch"]


def test_candidate_config_sets_layers_by_stride_and_keeps_the_scorer():
    base = ModelConfig(scorer={"coreset_ratio": 0.05})
    cfg = Candidate("tf_efficientnet_lite2", 384, (4, 8, 16), "full", "pad").config(base)
    assert cfg.backbone.name == "tf_efficientnet_lite2" and cfg.backbone.layers == [1, 2, 3]
    assert (cfg.features.image_size, cfg.features.finest_stage, cfg.features.resize) == (384, "full", "pad")
    assert cfg.scorer == {"coreset_ratio": 0.05} and base.backbone.name == "tf_efficientnet_lite0"
    assert Candidate.of(cfg) == Candidate("tf_efficientnet_lite2", 384, (4, 8, 16), "full", "pad")


# ----------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_features_from_stage_cache_equal_the_extractor(tmp_path, resize):
    """Deriving a candidate's features from the union-of-stages cache changes nothing."""
    import cv2

    from anomaly_inspect.data.synthetic import render_sample
    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.features.extractor import FeatureExtractor
    from anomaly_inspect.pipeline import Runner
    from anomaly_inspect.tuning.stage_cache import stage_maps

    paths = []
    for i, shape in enumerate([(64, 64), (48, 80), (80, 56)]):
        p = tmp_path / f"{i}.png"
        img = render_sample("fabric", None, i, 96).clean[: shape[0], : shape[1]]
        cv2.imwrite(str(p), img[..., ::-1])
        paths.append(p)
    base = ModelConfig()
    for strides, layers, finest in [((8, 16), [2, 3], "rows"), ((8, 16, 32), [2, 3, 4], "mean")]:
        base.features.finest_stage = finest
        emb = base.features.embedding()
        direct = Runner(FeatureExtractor(Backbone(layers=layers, runtime="torch"), 64, embedding=emb,
                                         resize=resize), progress=False).extract(paths, "x").features
        maps = stage_maps(Backbone(layers=[1, 2, 3, 4], runtime="torch"), paths, 64, resize,
                          tmp_path / "cache", progress=False)
        cached = maps.features(np.arange(3), strides, emb)
        np.testing.assert_allclose(cached.patches, direct.patches, rtol=1e-5, atol=1e-6)
        if resize == "pad":
            np.testing.assert_array_equal(cached.valid, direct.valid)
        else:
            assert cached.valid is None and direct.valid is None
    # a second call reads the cache instead of extracting
    again = stage_maps(Backbone(layers=[1, 2, 3, 4], runtime="torch"), paths, 64, resize,
                       tmp_path / "cache", progress=False)
    assert again.directory == maps.directory


def test_validation_banks_search_with_hnsw_and_give_exact_search_image_scores():
    from anomaly_inspect.core import Features
    from anomaly_inspect.tuning.tune import _scorer

    overrides = TuneSettings().validation_overrides()
    assert overrides == {"coreset_ratio": 0.01, "first_round_ratio": 0.1, "index": "hnsw"}
    rng = np.random.default_rng(0)
    train = Features(rng.standard_normal((60, 12, 12, 16)).astype(np.float32))
    held = Features((1.3 * rng.standard_normal((10, 12, 12, 16))).astype(np.float32))
    hnsw = _scorer(ModelConfig(), {**overrides, "coreset_ratio": 0.5}).fit(train)
    flat = _scorer(ModelConfig(), {**overrides, "coreset_ratio": 0.5, "index": "flat"}).fit(train)
    assert hnsw.search_index == "hnsw" and flat.search_index == "flat"
    assert hnsw.patch_maps is False  # validation reads image scores only: looser, cheaper search
    np.testing.assert_allclose(hnsw.score(held).image_scores, flat.score(held).image_scores, rtol=1e-5)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_stage_strides_from_the_backbone_card_equal_timms(name):
    import timm

    from anomaly_inspect.features.backbone import Backbone, cached_feature_info
    from anomaly_inspect.tuning.candidates import stage_strides

    Backbone(name, runtime="torch")  # writes the card (session cache)
    assert cached_feature_info(name) is not None
    model = timm.create_model(name, pretrained=False, features_only=True)
    assert stage_strides.__wrapped__(name) == tuple(int(r) for r in model.feature_info.reduction())


def test_all_square_reads_headers(tmp_path):
    import cv2

    from anomaly_inspect.tuning.tune import all_square

    for name, shape in [("a.png", (20, 20)), ("b.png", (20, 20)), ("c.png", (20, 21))]:
        cv2.imwrite(str(tmp_path / name), np.zeros((*shape, 3), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert all_square([tmp_path / "a.png", tmp_path / "b.png"])
    assert not all_square([tmp_path / "a.png", tmp_path / "c.png"])
    assert not all_square([tmp_path / "a.png", tmp_path / "bad.png"])  # unknown: validate as usual


def test_stretch_twins_and_ensemble_members_skip_twins():
    from anomaly_inspect.tuning.tune import CandidateScores, ensemble_members, stretch_twins

    batch = [Candidate.parse(n) for n in ("lite0-320-8+16-rows-stretch", "lite0-320-8+16-mean-pad",
                                          "lite0-320-8+16-rows-pad", "lite0-320-8+16-mean-stretch",
                                          "lite0-256-8+16-rows-pad")]
    assert stretch_twins(batch, square=False) == {}
    assert stretch_twins(batch, square=True) == {1: 3, 2: 0}  # 256-pad has no twin in the batch
    scores = [CandidateScores(c, {}, []) for c in batch]
    scores[1].same_as, scores[2].same_as = batch[3].name, batch[0].name
    borda = np.array([5.0, 4.0, 5.0, 4.0, 1.0])
    assert ensemble_members(scores, borda, 3) == [0, 1, 4]  # 2 repeats 0, 3 repeats 1
    assert ensemble_members(scores, borda, 1) == [0]


def test_unknown_candidate_backbone_is_named():
    from anomaly_inspect.tuning.candidates import stage_strides

    with pytest.raises(ValueError, match=r"backbone 'lite9': not a timm model name"):
        stage_strides.__wrapped__("lite9")


# ----------------------------------------------------------------------------- ties, candidates


def test_the_default_wins_a_borda_tie_wherever_it_stands():
    folds = np.array([[0.95, 0.8, 0.7], [0.8, 0.8, 0.6]])  # (n_folds, n_candidates)
    d = beats_default(folds, np.array([1.5, 1.5, 0.0]), default=1)  # the default is not first
    assert (d.chosen, d.winner, d.default) == (1, 1, 1) and d.reason == "the default ranks first"
    d = beats_default(folds, np.array([1.5, 0.0, 1.5]), default=1)  # a tie among the others
    assert (d.chosen, d.winner) == (1, 0) and d.margin == pytest.approx(0.075)  # +0.15, +0.0


def test_candidate_weights_random_holds_for_every_backbone_a_checkpoint_only_for_its_own():
    lite1 = Candidate("tf_efficientnet_lite1", 320, (8, 16), "rows", "stretch")
    lite0 = Candidate("tf_efficientnet_lite0", 256, (8, 16), "rows", "stretch")
    base = ModelConfig()
    base.backbone.weights = "random"
    assert lite1.config(base).backbone.weights == "random"
    base.backbone.weights = "/models/lite0.pth"
    assert lite1.config(base).backbone.weights is None and lite0.config(base).backbone.weights == "/models/lite0.pth"


def test_invalid_candidates_are_one_line_naming_them_and_the_grid_leaves_them_out(caplog):
    from anomaly_inspect.tuning.tune import usable

    base = ModelConfig()
    base.features.crop_size = 300  # image size 320: the grid's 256 cannot take the crop
    with pytest.raises(ValueError, match=r"^candidate lite0-256-8\+16-rows-stretch: features: crop_size "
                                         r"\(300\) must not exceed image_size \(256\)$"):
        Candidate.parse("lite0-256-8+16-rows-stretch").check(base)
    with pytest.raises(ValueError, match=r"^candidate lite0-0-8\+16-rows-stretch: features: image_size: "
                                         r"must be at least 32, got 0$"):
        Candidate.parse("lite0-0-8+16-rows-stretch").check(ModelConfig())
    with pytest.raises(ValueError, match=r"^candidate lite0-320-8\+12-rows-stretch: .*no stage with stride \[12\]"):
        Candidate.parse("lite0-320-8+12-rows-stretch").check(ModelConfig())
    grid = candidate_grid("compact", base)
    kept = usable(grid, base)
    assert [c.name for c in grid if c not in kept] == ["lite0-256-8+16-rows-stretch"] and len(kept) == 10
    assert any("leaving out candidate lite0-256-8+16-rows-stretch: features: crop_size (300)" in r.getMessage()
               for r in caplog.records)


def _pngs(folder, n, size=64, texture="fabric", first=0):
    import cv2

    from anomaly_inspect.data.synthetic import render_sample

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{first + i:03d}.png"
        cv2.imwrite(str(p), render_sample(texture, None, first + i, size).clean[..., ::-1])
        out.append(p)
    return out


@pytest.mark.parametrize("base, message", [
    (ModelConfig(method="knn"), "method 'knn' reads pooled features"),
    (ModelConfig(method="tailedcore"), "method 'tailedcore' reads patches and pooled features.*patch_mean"),
])
def test_tune_refuses_before_any_work(tmp_path, base, message):
    """A method tune cannot validate, a bad candidate, too few images after --max-tune-images:
    refused before the synthetic set or any extraction (the cache folder is never made)."""
    from anomaly_inspect.tuning.tune import tune

    paths = _pngs(tmp_path / "train", 8)
    with pytest.raises(ValueError, match=message):
        tune(paths, base, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match=r"^candidate lite0-64-8\+12-mean-stretch: .*stride \[12\]"):
        tune(paths, ModelConfig(), candidates=[Candidate.parse("lite0-64-8+12-mean-stretch")],
             cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match=r"^tune needs at least 6 training images, got 4 "
                                         r"\(max_images=4 of 8 images\)$"):
        tune(paths, ModelConfig(), TuneSettings(max_images=4), cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


def test_tailedcore_taking_its_embedding_from_the_patches_may_be_tuned():
    from anomaly_inspect.tuning.tune import check_method

    check_method(ModelConfig(method="tailedcore", scorer={"embedding": "patch_mean"}))
    check_method(ModelConfig(method="softpatch"))
    with pytest.raises(ValueError, match="tailedcore"):
        check_method(ModelConfig(method="tailedcore"))


# ----------------------------------------------------------------------------- cache entries


def test_synthetic_set_is_drawn_again_when_a_source_changes_in_place(tmp_path):
    import os

    import cv2

    from anomaly_inspect.data.image_io import read_image
    from anomaly_inspect.data.synthetic import render_sample
    from anomaly_inspect.tuning.tune import synthetic_set

    paths = _pngs(tmp_path / "train", 6)
    settings = TuneSettings(n_folds=2)
    _, folds, fams = fold_plan(6, settings)
    first = synthetic_set(paths, folds, fams, settings, tmp_path / "cache")
    assert synthetic_set(paths, folds, fams, settings, tmp_path / "cache") == first  # reused
    new = render_sample("metal", None, 7, 64).clean
    cv2.imwrite(str(paths[0]), new[..., ::-1])  # the same name and size, another picture
    second = synthetic_set(paths, folds, fams, settings, tmp_path / "cache")
    assert second[0].parent != first[0].parent
    for drawn, source in ((first[0], render_sample("fabric", None, 0, 64).clean), (second[0], new)):
        mask = read_image(drawn.with_name(drawn.stem + "_mask.png"))[..., 0] > 0
        np.testing.assert_array_equal(read_image(drawn)[~mask], source[~mask])  # drawn on that source
    st = paths[3].stat()  # a new mtime alone (same bytes) is a change too
    os.utime(paths[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert synthetic_set(paths, folds, fams, settings, tmp_path / "cache")[0].parent not in (
        first[0].parent, second[0].parent)


def _maps(paths, cache, **kw):
    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.tuning.stage_cache import stage_maps

    return stage_maps(Backbone(layers=[2, 3], runtime="torch"), paths, 64, "stretch", cache,
                      batch_size=1, progress=False, **kw)


def _direct(paths, crop=None, resize="stretch"):
    """Patch features from the extractor itself (the reference for the cache)."""
    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.features.extractor import FeatureExtractor
    from anomaly_inspect.pipeline import Runner

    ext = FeatureExtractor(Backbone(layers=[2, 3], runtime="torch"), 64, crop, batch_size=1,
                           embedding=ModelConfig().features.embedding(), resize=resize)
    return Runner(ext, progress=False).extract(paths, "x").features


def test_a_run_killed_midway_never_spoils_the_entry_another_run_writes(tmp_path, monkeypatch):
    """Run A pauses after two of four images; run C starts the same entry, writes one image and
    is killed after A has finished. A later run B reads A's entry, right in every row (it used
    to read row 1 as zeros: C had truncated the shared memmaps and A marked them done)."""
    import threading

    from anomaly_inspect.features import extractor as ex

    paths = _pngs(tmp_path / "imgs", 4)
    emb = ModelConfig().features.embedding()
    ref = _direct(paths).patches
    real = ex.FeatureExtractor.iter_extract
    roles, results = ["A", "C"], {}
    c_wrote, a_done = threading.Event(), threading.Event()

    class Killed(Exception):
        pass

    def run_c():
        with pytest.raises(Killed):
            _maps(paths, tmp_path / "cache")
        results["C"] = "killed"

    def interleaved(self, *a, **k):
        role = roles.pop(0)
        for n, item in enumerate(real(self, *a, **k)):
            if role == "C" and n == 1:
                c_wrote.set()
                assert a_done.wait(60)
                raise Killed
            yield item
            if role == "A" and n == 1:
                results["thread"] = threading.Thread(target=run_c)
                results["thread"].start()
                assert c_wrote.wait(60)

    monkeypatch.setattr(ex.FeatureExtractor, "iter_extract", interleaved)
    results["A"] = _maps(paths, tmp_path / "cache")
    a_done.set()
    results["thread"].join(60)
    assert results["C"] == "killed"
    results["B"] = _maps(paths, tmp_path / "cache")  # reads the entry (no role left to extract)
    for run in ("A", "B"):
        np.testing.assert_allclose(results[run].features(np.arange(4), (8, 16), emb).patches, ref,
                                   rtol=1e-5, atol=1e-6)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [results["A"].directory.name]


def test_a_run_that_loses_the_race_takes_the_entry_there_and_drops_its_copy(tmp_path, monkeypatch):
    from anomaly_inspect.features import extractor as ex

    paths = _pngs(tmp_path / "imgs", 4)
    ref = _direct(paths).patches
    real = ex.FeatureExtractor.iter_extract
    roles, results = ["A", "B"], {}

    def interleaved(self, *a, **k):
        role = roles.pop(0)
        for n, item in enumerate(real(self, *a, **k)):
            yield item
            if role == "A" and n == 1:
                results["B"] = _maps(paths, tmp_path / "cache")  # B finishes first

    monkeypatch.setattr(ex.FeatureExtractor, "iter_extract", interleaved)
    results["A"] = _maps(paths, tmp_path / "cache")
    assert results["A"].directory == results["B"].directory
    entry = results["A"].directory
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # A's copy removed
    np.testing.assert_allclose(results["A"].features(np.arange(4), (8, 16), ModelConfig().features.embedding()).patches,
                               ref, rtol=1e-5, atol=1e-6)


def test_a_broken_entry_is_extracted_again_with_a_warning(tmp_path, caplog):
    paths = _pngs(tmp_path / "imgs", 3)
    maps = _maps(paths, tmp_path / "cache")
    entry = maps.directory
    ref = _direct(paths).patches
    emb = ModelConfig().features.embedding()
    for damage in (lambda: (entry / "stride8.npy").write_bytes((entry / "stride8.npy").read_bytes()[:1000]),
                   lambda: (entry / "stride16.npy").unlink()):
        damage()
        caplog.clear()
        again = _maps(paths, tmp_path / "cache")
        assert again.directory == entry
        np.testing.assert_allclose(again.features(np.arange(3), (8, 16), emb).patches, ref, rtol=1e-5, atol=1e-6)
        assert any(str(entry) in r.getMessage() and "broken stage-map cache entry" in r.getMessage()
                   for r in caplog.records)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]


@pytest.mark.parametrize("done", [[], {"n": 3, "skipped": 5}, {"n": 3, "skipped": [[7, "x"]]},
                                  {"n": 3, "skipped": [{"0": "x"}]}, {"n": "3"}, {"n": True}])
def test_a_done_file_of_the_wrong_shape_is_a_broken_entry(tmp_path, caplog, done):
    """Valid JSON that is not what an extraction writes: extracted again, with a warning (it
    crashed every later run, and the entry was never rebuilt)."""
    import json

    from anomaly_inspect.tuning.stage_cache import _complete

    entry = tmp_path / "entry"
    entry.mkdir()
    np.save(entry / "boxes.npy", np.zeros((3, 4), np.int64))
    np.save(entry / "stride8.npy", np.zeros((3, 2, 2, 2), np.float32))
    (entry / "done").write_text(json.dumps({"n": 3, "strides": [8], "skipped": [[1, "bad"]]}))
    assert _complete(entry, [8], 64).skipped == [(1, "bad")]  # what an extraction writes
    (entry / "done").write_text(json.dumps(done))
    assert _complete(entry, [8], 64) is None
    assert f"{entry}: broken stage-map cache entry (done: " in caplog.text


def test_an_unwritable_tune_cache_names_the_option_and_a_complete_one_still_reads(tmp_path,
                                                                               monkeypatch):
    """A read-only cache folder was fatal as ``[Errno 30] Read-only file system: 'ro/tc'``;
    an entry already there is read without writing anything."""
    import errno
    from pathlib import Path
    from types import SimpleNamespace

    from anomaly_inspect.tuning import stage_cache

    def extract(backbone, paths, image_size, resize, out, *rest):  # without a backbone
        np.save(out / "boxes.npy", np.zeros((len(paths), 4), np.int64))
        np.save(out / "stride8.npy", np.zeros((len(paths), 2, 2, 2), np.float32))
        (out / "done").write_text(f'{{"n": {len(paths)}, "strides": [8], "skipped": []}}')

    backbone = SimpleNamespace(name="toy", weight_source=SimpleNamespace(checksum="abc"),
                               layers=[2], strides=[8], mean=[0.5], std=[0.5], release=lambda: None)
    paths = _pngs(tmp_path / "imgs", 2)
    monkeypatch.setattr(stage_cache, "_extract", extract)
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "cache" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    def maps(cache):
        return stage_cache.stage_maps(backbone, paths, 64, "stretch", cache, progress=False)

    complete = maps(tmp_path / "written" / "cache")
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert maps(tmp_path / "written" / "cache").directory == complete.directory  # read as it is
    for cache in (tmp_path / "cache", tmp_path / "written" / "cache"):
        if cache.exists():
            (complete.directory / "done").unlink()  # broken: rebuilding it needs writing
        with pytest.raises(OSError) as info:
            maps(cache)
        assert str(info.value).startswith(f"{cache}: cannot write the stage-map cache entry "
                                          f"there (Read-only file system: {cache}")
        assert str(info.value).endswith("; choose a writable folder with --tune-cache or "
                                        "$ANOMALY_INSPECT_CACHE")


def test_cache_space_is_reserved_up_front_and_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import errno
    import os

    from anomaly_inspect.tuning.stage_cache import _memmap

    arr = _memmap(tmp_path / "a.npy", (64, 256, 32))  # 2 MiB of float32, nothing written yet
    st = os.stat(tmp_path / "a.npy")
    assert st.st_blocks * 512 >= st.st_size >= arr.nbytes  # allocated, not sparse
    del arr

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    paths = _pngs(tmp_path / "imgs", 3)
    with pytest.raises(OSError) as info:
        _maps(paths, tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "cache" / "tf_efficientnet_lite0-64-stretch-"))
    assert ": no space left on the device" in msg
    assert list((tmp_path / "cache").iterdir()) == []  # the half-built entry is gone


def test_stage_maps_skip_unreadable_images_only_when_asked(tmp_path, caplog):
    from anomaly_inspect.data.image_io import ImageReadError

    paths = _pngs(tmp_path / "imgs", 4)
    png = paths[1].read_bytes()
    paths[1].write_bytes(png[: len(png) // 2])
    good = [paths[0], paths[2], paths[3]]
    with pytest.raises(ImageReadError, match=r"001\.png: truncated"):
        _maps(paths, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    maps = _maps(paths, tmp_path / "cache", skip_unreadable=True)
    assert len(maps) == 3 and [i for i, _ in maps.skipped] == [1]
    np.testing.assert_allclose(maps.features(np.arange(3), (8, 16), ModelConfig().features.embedding()).patches,
                               _direct(good).patches, rtol=1e-5, atol=1e-6)
    assert any("skipping" in r.getMessage() and "001.png" in r.getMessage() for r in caplog.records)
    with pytest.raises(ImageReadError, match=r"001\.png: truncated"):  # the cached entry too
        _maps(paths, tmp_path / "cache")


@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_stage_maps_take_the_crop_fit_takes(tmp_path, resize):
    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.tuning.stage_cache import stage_maps

    paths = _pngs(tmp_path / "imgs", 2) + _pngs(tmp_path / "wide", 1, size=96, first=5)
    import cv2  # one image not square: pad leaves a border, the crop cuts into it

    cv2.imwrite(str(paths[2]), cv2.imread(str(paths[2]))[:60])
    direct = _direct(paths, crop=48, resize=resize)
    maps = stage_maps(Backbone(layers=[2, 3], runtime="torch"), paths, 64, resize, tmp_path / "cache",
                      progress=False, crop_size=48)
    cached = maps.features(np.arange(3), (8, 16), ModelConfig().features.embedding())
    assert cached.patches.shape[1:3] == (6, 6)  # 48 px / stride 8
    np.testing.assert_allclose(cached.patches, direct.patches, rtol=1e-5, atol=1e-6)
    if resize == "pad":
        assert direct.valid is not None and not direct.valid.all()
        np.testing.assert_array_equal(cached.valid, direct.valid)
    else:
        assert cached.valid is None and direct.valid is None


def test_building_folders_a_killed_run_left_are_removed_by_the_next_build(tmp_path):
    """A cache entry's temporary folder is locked while it is built: the next build of any entry
    in the same cache folder removes those that no live run holds (left by ``kill -9``, of this
    entry or another: a killed run's key may never be built again), and keeps a locked or a young
    one and other folders."""
    import os
    import time

    from anomaly_inspect.files import STALE_AFTER_S, lock_folder, new_entry

    entry = tmp_path / "cache" / "maps-abc"
    entry.parent.mkdir()
    names = {"killed": ".maps-abc.123.0badcafe.tmp", "live": ".maps-abc.124.00c0ffee.tmp",
             "young": ".maps-abc.125.0000beef.old", "other": ".maps-xyz.126.0badcafe.tmp",
             "other_old": ".synth-1.127.12345678.old", "other_live": ".maps-xyz.128.0badcafe.tmp",
             "entry": "maps-xyz", "not_ours": ".maps-xyz.tmp"}
    old = time.time() - STALE_AFTER_S - 5
    for key, name in names.items():
        (entry.parent / name / "part").mkdir(parents=True)
        if key != "young":
            os.utime(entry.parent / name, (old, old))
    held = [lock_folder(entry.parent / names[k]) for k in ("live", "other_live")]
    try:
        with new_entry(entry) as tmp:
            (tmp / "done").write_text("{}")
            assert lock_folder(tmp) is None  # locked while it is built
    finally:
        for fd in held:
            os.close(fd)
    left = sorted(p.name for p in entry.parent.iterdir())
    assert left == sorted([entry.name, *(names[k] for k in ("live", "young", "other_live", "entry",
                                                              "not_ours"))])


def test_stage_map_key_holds_the_precision_and_the_code(tmp_path):
    """f32 entries have one key on any runtime (hand-computed below: the settings, the files
    and the package's code, :func:`code_fingerprint`);
    int8 entries are keyed by the images the graph is calibrated on, and an uncalibrated
    int8 backbone is refused before anything is extracted."""
    import hashlib
    import json

    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.features.cache import code_fingerprint
    from anomaly_inspect.features.runtime import CalibrationError
    from anomaly_inspect.tuning.stage_cache import calibrate, stage_maps
    from layout_writer import rgb_image, write_image

    paths = [write_image(tmp_path / f"{i}.png", rgb_image(48, seed=i)) for i in range(4)]
    cache = tmp_path / "cache"

    def maps_of(bb):
        return stage_maps(bb, paths, 64, "stretch", cache, batch_size=2, progress=False)

    f32 = Backbone(layers=[2, 3], runtime="torch")
    plain = maps_of(f32)
    files = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
    key = hashlib.sha256(json.dumps({
        "backbone": f32.name, "weights": f32.weight_source.checksum, "layers": [2, 3],
        "size": 64, "resize": "stretch", "mean": f32.mean, "std": f32.std, "files": files,
        "code": code_fingerprint(include=("tuning/stage_cache.py",)),
    }).encode()).hexdigest()[:16]
    assert plain.directory == cache / f"tf_efficientnet_lite0-64-stretch-{key}"
    assert maps_of(Backbone(layers=[2, 3], runtime="onnxruntime")).directory == plain.directory
    int8 = Backbone(layers=[2, 3], runtime="onnxruntime", precision="int8")
    with pytest.raises(CalibrationError, match="is not calibrated"):
        maps_of(int8)
    assert sorted(p.name for p in cache.iterdir()) == [plain.directory.name]
    calibrate(int8, paths, 64, "stretch")
    quantised = maps_of(int8)
    assert quantised.directory != plain.directory
    assert not np.array_equal(quantised.maps[16][:], plain.maps[16][:])  # int8's own maps
    other = Backbone(layers=[2, 3], runtime="onnxruntime", precision="int8")
    calibrate(other, paths[:2], 64, "stretch")  # other calibration images: another entry
    assert maps_of(other).directory not in (plain.directory, quantised.directory)


def test_synthetic_copies_of_a_huge_jpeg_differ_from_it_only_inside_the_mask_as_loaded(tmp_path):
    """The loader decodes a JPEG over 16 MP at a reduced size (no mask to keep aligned); the copy
    is drawn on that decode, so as model inputs source and copy differ only inside the mask.
    PNG sources keep the set drawn without the input size (one set for every size)."""
    import cv2

    from anomaly_inspect.data.anomalies import AnomalyRecipe
    from anomaly_inspect.data.image_io import read_mask
    from anomaly_inspect.data.loader import _load_one
    from anomaly_inspect.data.synthetic import render_sample
    from anomaly_inspect.data.transforms import TransformConfig, build_transform
    from anomaly_inspect.tuning.tune import synthetic_set

    paths = []
    for i in range(4):  # 4100 x 4000 = 16.4 MP, generated here, never committed
        big = cv2.resize(render_sample("metal", None, i, 128).clean[..., ::-1], (4100, 4000),
                         interpolation=cv2.INTER_CUBIC)
        paths.append(tmp_path / f"{i}.jpg")
        cv2.imwrite(str(paths[-1]), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    settings = TuneSettings(n_folds=2, recipe=AnomalyRecipe(families=("local", "cutpaste")))
    _, folds, fams = fold_plan(4, settings)
    sets = {}
    for size in (64, 96, 320):  # reduced 8x, 8x and 4x for these input sizes
        sets[size] = synthetic_set(paths, folds, fams, settings, tmp_path / "cache", image_size=size)
        cfg = TransformConfig(image_size=size)
        transform = build_transform(cfg)
        for src, copy in zip(paths, sets[size], strict=True):
            normal = _load_one(src, None, transform, False, cfg)[0]
            drawn = _load_one(copy, None, transform, False, cfg)[0]
            mask = read_mask(copy.with_name(copy.stem + "_mask.png"))
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
            mask = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0  # the resize's reach
            np.testing.assert_array_equal(normal[:, ~mask], drawn[:, ~mask])
            assert (normal != drawn).any()
    assert sets[64] == sets[96] and sets[64][0].parent != sets[320][0].parent  # same decodes, same set
    assert cv2.imread(str(sets[320][0])).shape[:2] == (1000, 1025)
    pngs = _pngs(tmp_path / "png", 4)
    plain = synthetic_set(pngs, folds, fams, settings, tmp_path / "cache")
    assert synthetic_set(pngs, folds, fams, settings, tmp_path / "cache", image_size=32) == plain


def test_ensemble_normal_calibration_and_test_scores_share_the_int8_calibration(tmp_path, monkeypatch):
    """With more training images than ``max_images``, the normal median / MAD of an int8 member
    is computed with the backbone calibrated on all training images, as its test scores (and
    ``fit``) are, not on the tuning subset."""
    import importlib
    from pathlib import Path
    from types import SimpleNamespace

    from anomaly_inspect.data.mvtec import AnomalyDataset
    from anomaly_inspect.data.samples import Sample
    from anomaly_inspect.tuning import judge

    tune = importlib.import_module("anomaly_inspect.tuning.tune")  # the package names a function so
    train = _pngs(tmp_path / "train", 8)
    test = _pngs(tmp_path / "test", 2, texture="metal")
    dataset = AnomalyDataset("x", [Sample(p, 0, "train") for p in train],
                             [Sample(p, i, "test") for i, p in enumerate(test)])
    base = ModelConfig()
    base.backbone.runtime, base.backbone.precision = "onnxruntime", "int8"
    cand = Candidate.parse("lite0-64-8+16-rows-stretch")
    digests = {}

    def recording(module, name):
        real = module.calibrate

        def calibrate(backbone, paths, *a, **k):
            real(backbone, paths, *a, **k)
            digests[name] = (len(paths), backbone.calibration_digest)

        monkeypatch.setattr(module, "calibrate", calibrate)

    recording(judge, "test scores")
    recording(tune, "normal calibration")
    settings = TuneSettings(n_folds=2, max_images=6)  # a tuning subset of 6 of the 8 images
    result = SimpleNamespace(readable=lambda paths: [Path(p) for p in paths], settings=settings,
                             candidates=[])
    scores = judge.test_scores(dataset, result, [cand], base, tmp_path / "cache", progress=False)
    cal, = tune.normal_calibrations(train, base, [tune.CandidateScores(cand, {}, [])], settings,
                                    tmp_path / "cache", progress=False)
    assert digests["test scores"] == digests["normal calibration"] and digests["test scores"][0] == 8
    assert len(scores[cand.name]) == 2 and np.isfinite(cal.median) and cal.mad > 0


def test_stage_maps_of_another_pixel_budget_are_another_entry(tmp_path):
    """Images refused under a small budget are not left out of maps read under a larger one
    (nor included under a smaller budget than they were extracted with)."""
    import cv2

    from anomaly_inspect.data.image_io import ImageReadError

    paths = _pngs(tmp_path / "imgs", 3)
    cv2.imwrite(str(paths[2]), cv2.resize(cv2.imread(str(paths[2])), (96, 96)))
    small = _maps(paths, tmp_path / "cache", max_pixels=64 * 64, skip_unreadable=True)
    assert [i for i, _ in small.skipped] == [2]
    full = _maps(paths, tmp_path / "cache")  # the default budget: all three, no error
    assert len(full) == 3 and not full.skipped and full.directory != small.directory
    with pytest.raises(ImageReadError, match=r"002\.png: image larger than the pixel budget"):
        _maps(paths, tmp_path / "cache", max_pixels=64 * 64)


def test_rank_correlation_is_null_with_a_note_where_undefined_and_never_warns():
    """``tune --judge``'s Spearman rho: two candidates or constant scores give null and the
    reason (it was a bare NaN, no valid JSON, with scipy's warning printed under --quiet)."""
    import json
    import warnings

    from anomaly_inspect.tuning.judge import rank_correlation

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rank_correlation([1.0, 2.0, 3.0], [0.5, 0.7, 0.6]) == (0.5, None)
        assert rank_correlation([1.0, 2.0], [0.5, 0.7]) == (None, "undefined with 2 candidates (needs 3)")
        assert rank_correlation([1.0, 2.0, 3.0], [0.9, 0.9, 0.9]) == (
            None, "undefined: every candidate has the same test score")
        assert rank_correlation([2.0, 2.0, 2.0], [0.9, 0.9, 0.9]) == (
            None, "undefined: every candidate has the same validation and test score")
    json.dumps({"rho": rank_correlation([1.0, 2.0], [0.5, 0.7])[0]}, allow_nan=False)


def test_ensemble_normal_calibration_reads_the_stage_maps_validation_extracted(tmp_path, monkeypatch):
    """A member extracted with the union of its group's stages in validation is read from that
    cache entry for its normal calibration (it was extracted again under its own stages alone:
    another cache key); a ``pad`` twin reads its ``stretch`` twin's entry."""
    import importlib

    from anomaly_inspect.tuning import stage_cache

    tune = importlib.import_module("anomaly_inspect.tuning.tune")
    paths = _pngs(tmp_path / "train", 12)
    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    cands = [Candidate.parse(n) for n in ("lite0-64-8+16-rows-stretch", "lite0-64-4+8+16-rows-stretch",
                                          "lite0-64-8+16-rows-pad")]
    result = tune.tune(paths, base, TuneSettings(ensemble=3), cands, cache_dir=tmp_path / "cache",
                       progress=False)
    by = {c.candidate.name: c for c in result.candidates}
    assert by["lite0-64-8+16-rows-stretch"].extraction == Candidate.parse("lite0-64-4+8+16-rows-stretch")
    assert by["lite0-64-8+16-rows-pad"].same_as == "lite0-64-8+16-rows-stretch"
    real, extracted = stage_cache._extract, []

    def counting(backbone, paths, *a, **k):
        extracted.append(list(backbone.layers))
        return real(backbone, paths, *a, **k)

    monkeypatch.setattr(stage_cache, "_extract", counting)
    members = [by["lite0-64-8+16-rows-stretch"], by["lite0-64-8+16-rows-pad"]]
    cals = tune.normal_calibrations(paths, base, members, result.settings, tmp_path / "cache", progress=False)
    assert extracted == [] and len(cals) == 2 and all(c.mad > 0 for c in cals)
    assert cals[0].to_dict() == cals[1].to_dict()  # twins: the very same model input
    # a member without a recorded extraction is extracted alone, as before
    alone, = tune.normal_calibrations(paths, base, [tune.CandidateScores(cands[0], {}, [])],
                                      result.settings, tmp_path / "cache", progress=False)
    assert extracted == [[2, 3]]
    assert (alone.median, alone.mad) == pytest.approx((cals[0].median, cals[0].mad), rel=1e-4)


def test_an_unwritable_tune_cache_names_the_option_for_the_synthetic_set_too(tmp_path, monkeypatch):
    """The synthetic-anomaly set is tune's first cache entry: it said 'use another cache
    folder', not which option chooses it."""
    from anomaly_inspect.tuning.tune import TuneSettings, synthetic_set
    from layout_writer import read_only_below

    paths = _pngs(tmp_path / "imgs", 4)
    read_only_below(monkeypatch, "cache")
    with pytest.raises(OSError, match=r"choose a writable folder with --tune-cache or "
                                      r"\$ANOMALY_INSPECT_CACHE$"):
        synthetic_set(paths, np.array([0, 0, 1, 1]), np.zeros(4, np.int64), TuneSettings(),
                      tmp_path / "cache")


# An unknown backbone keeps its messages.
def test_an_unknown_backbone_keeps_its_messages():
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.features.backbone import stage_strides
    from anomaly_inspect.tuning.candidates import Candidate

    with pytest.raises(ValueError, match=r"^backbone 'lite9': not a timm model name$"):
        stage_strides.__wrapped__("lite9")
    with pytest.raises(ValueError, match=r"^candidate lite9-320-8\+16-rows-stretch: backbone "
                                         r"'lite9': not a timm model name \(candidates name "
                                         r"lite0, lite1, lite2 or a timm model, e\.g\. "
                                         r"tf_efficientnet_lite0\)$"):
        Candidate.parse("lite9-320-8+16-rows-stretch").check(ModelConfig())
