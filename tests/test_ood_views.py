"""Rotated / flipped views of every image for pooled scorers: `features: views` (fit / score) and the ood-benchmark rows' `views`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_inspect.config import ConfigError
from anomaly_inspect.core import Features
from anomaly_inspect.evaluation import ood_benchmark
from anomaly_inspect.evaluation.ood import ood_metrics
from anomaly_inspect.evaluation.ood_benchmark import (
    OODBenchmarkConfig,
    build_data,
    run_ood_benchmark,
)
from anomaly_inspect.pipeline import Runner, build_backbone, build_extractor
from anomaly_inspect.pipeline.runner import timed_scores, with_views_as_rows
from anomaly_inspect.resources import StageTimes
from anomaly_inspect.scorers.distance import Mahalanobis
from ood_helpers import heldout_config as _heldout

DIHEDRAL = [(k, flip) for k in range(4) for flip in (False, True)]  # (0, False): the image itself


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(torch.flip(x, dims=[-1]) if flip else x, k=k, dims=(-2, -1))


@pytest.mark.parametrize("row, message", [
    ({"name": "mahalanobis", "views": "rot90"}, r"views must be one of \['rot15flip', .*'rotflip'\]"),
    ({"name": "mahalanobis", "views": "none"}, r"views must be one of"),
    ({"name": "patchcore", "views": "rotflip"}, r"views 'rotflip' is for pooled inputs"),
    ({"name": "block_feature_norm", "views": "rotflip"}, r"views 'rotflip' is for pooled inputs"),
    ({"name": "nan", "views": "rotflip", "nuisance": "colour"}, r"views are not combined with a nuisance"),
    ({"name": "nan", "views": "rotflip", "orient": "pseudo_ood"}, r"views are not combined with a nuisance"),
])
def test_views_a_row_cannot_take_are_refused_naming_the_config(row, message):
    with pytest.raises(ConfigError, match=r"^c\.yaml: scorer '.*': " + message):
        OODBenchmarkConfig.from_dict({"benchmark": "isic", "data": {"root": "x"}, "splits": ["ink_all"],
                                      "scorers": [row]}, "c.yaml")


def test_the_extractors_views_are_each_images_views_in_order(ood_tiny, tmp_path):
    """``features: views``: the pooled embeddings of every image's views (4 images a batch,
    7 views each), per image and in view order: equal to extracting every image under each
    (angle, flip) separately; the image's own pooled embedding as without views."""
    cfg = _heldout(ood_tiny, tmp_path, ["mahalanobis"])
    cfg.features.batch_size = 4
    data, _ = build_data(cfg)
    paths = [s.path for s in data.id_train + data.id_test[:1]]  # 7: a batch of 4 and one of 3
    backbone = build_backbone(cfg)
    plain = Runner(build_extractor(cfg, backbone, outputs=("pooled",)), progress=False)
    cfg.features.views = "rotflip"
    got = Runner(build_extractor(cfg, backbone, outputs=("pooled",)), progress=False).extract(paths, "v").features
    assert got.pooled_views.shape[:2] == (7, 7)
    np.testing.assert_array_equal(got.pooled, plain.extract(paths, "p").features.pooled)
    # rotflip's order: angle 0 flipped, then 90, 180, 270 each plain and flipped
    order = [(a // 90, f) for a in (0, 90, 180, 270) for f in (False, True) if (a, f) != (0, False)]
    for v, (k, flip) in enumerate(order):
        want = plain.extract(paths, "one view", lambda x, k=k, flip=flip: _dihedral(x, k, flip)).features.pooled
        np.testing.assert_allclose(got.pooled_views[:, v], want, rtol=1e-5, atol=1e-6)


def test_a_fitted_model_scores_an_image_as_its_rotated_and_mirrored_copies(ood_tiny, tmp_path):
    """fit / score with ``features: views: rotflip``: the mean over the 8 dihedral views does
    not depend on how an image is held (64-px squares at 64 px: no resize), and the saved model
    keeps its views."""
    from PIL import Image

    from anomaly_inspect import fit, load_model
    from anomaly_inspect.config import ModelConfig

    cfg = ModelConfig.from_dict({"method": "mahalanobis", "backbone": {"weights": "random"},
                                 "features": {"image_size": 64, "batch_size": 4, "views": "rotflip"}})
    train = sorted((ood_tiny / "tiny" / "train" / "good").glob("*.png"))
    model = fit(train, cfg, calibration_fraction=0.25, progress=False)
    src = sorted((ood_tiny / "tiny" / "test").rglob("*.png"))[:3]
    copies = []
    for p in src:
        img = Image.open(p)
        for i, t in enumerate((Image.Transpose.ROTATE_90, Image.Transpose.FLIP_LEFT_RIGHT,
                               Image.Transpose.TRANSPOSE)):
            copies.append(tmp_path / f"{p.parent.name}_{p.stem}_{i}.png")
            img.transpose(t).save(copies[-1])
    scores = np.array([r.score for r in model.score(src + copies, progress=False)])
    np.testing.assert_allclose(scores[3:].reshape(3, 3), np.repeat(scores[:3, None], 3, 1), rtol=1e-4)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.cfg.features.views == "rotflip"
    np.testing.assert_allclose([r.score for r in again.score(src, progress=False)], scores[:3], rtol=1e-5)


def test_views_are_for_pooled_scorers_and_ood_rows_take_them_per_row(tmp_path):
    from anomaly_inspect.config import ModelConfig

    with pytest.raises(ConfigError, match=r"features: views 'rotflip' is for scorers of the pooled "
                                          r"embedding; 'patchcore' reads patches features"):
        ModelConfig.from_dict({"features": {"views": "rotflip"}}).check_scorer()
    with pytest.raises(ConfigError, match=r"features: views must be one of"):
        ModelConfig.from_dict({"features": {"views": "rot90"}})
    with pytest.raises(ConfigError, match=r"^c\.yaml: features: views: set views on the rows"):
        OODBenchmarkConfig.from_dict({"benchmark": "isic", "data": {"root": "x"}, "splits": ["ink_all"],
                                      "scorers": ["mahalanobis"], "features": {"views": "rotflip"}},
                                     "c.yaml")


def test_fitting_on_views_gives_every_view_its_images_label():
    pooled = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)
    views = np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 2, 4) + 100
    rows, labels = with_views_as_rows(Features(pooled=pooled, pooled_views=views), np.array([5, 7]))
    np.testing.assert_array_equal(rows.pooled, [pooled[0], *views[0], pooled[1], *views[1]])
    np.testing.assert_array_equal(labels, [5, 5, 5, 7, 7, 7])
    plain = Features(pooled=pooled)
    assert with_views_as_rows(plain, None) == (plain, None)


def test_a_score_with_views_is_the_mean_over_the_image_and_its_views():
    class Sum:
        def score(self, features):
            from anomaly_inspect.scorers.base import ScoreResult
            return ScoreResult(features.pooled.sum(1))

    pooled = np.array([[1, 1], [0, 2]], dtype=np.float32)
    views = np.array([[[3, 3], [5, 5]], [[4, 0], [2, 2]]], dtype=np.float32)  # 2 images x 2 views
    got, _ = timed_scores({"s": Sum()}, Features(pooled=pooled, pooled_views=views), StageTimes())
    np.testing.assert_allclose(got["s"].image_scores, [(2 + 6 + 10) / 3, (2 + 4 + 4) / 3])
    plain, _ = timed_scores({"s": Sum()}, Features(pooled=pooled), StageTimes())
    np.testing.assert_allclose(plain["s"].image_scores, [2, 2])


def test_a_views_row_end_to_end_with_its_fusion_and_cache(ood_tiny, tmp_path):
    """The row equals the hand computation (fit on all 8 views of ID train, mean distance over a
    scored image's 8 views), records its views, is fused (cross-fitted on views too) and comes
    from the cache the second time."""
    rows = ["mahalanobis", {"name": "mahalanobis", "label": "m8", "views": "rotflip"}]
    cfg = _heldout(ood_tiny, tmp_path, rows)
    cfg.fusions = [ood_benchmark.FusionSpec("f", ["mahalanobis", "m8"], folds=2)]
    report = run_ood_benchmark(cfg, progress=False)
    data, _ = build_data(cfg)
    n_sets = len(data.id_train) + len(data.id_test) + sum(map(len, data.ood.values()))
    assert report["timings_s"]["images_extracted"] == 9 * n_sets  # the views extractor's own pass too
    got = {r["scorer"]: r for r in report["results"]}
    assert got["m8"]["views"] == "rotflip" and got["mahalanobis"]["views"] == ""
    assert got["f"]["views"] is None and report["fusions"]["f"]["members"] == ["mahalanobis", "m8"]

    runner = Runner(build_extractor(cfg, build_backbone(cfg), outputs=("pooled",)), progress=False)

    def views(samples):
        return np.stack([runner.extract([s.path for s in samples], "v", lambda x, k=k, f=f: _dihedral(
            x, k, f)).features.pooled for k, f in DIHEDRAL], axis=1)

    train = views(data.id_train)
    m = Mahalanobis().fit(Features(pooled=train.reshape(-1, train.shape[-1])))

    def scores(samples):
        v = views(samples)
        return np.mean([m.score(Features(pooled=v[:, i])).image_scores for i in range(8)], axis=0)

    want = ood_metrics(scores(data.id_test), scores(data.ood["defects"]))
    assert got["m8"]["auroc"] == round(want.auroc, 4)
    assert got["m8"]["fpr_at_tpr80"] == round(want.fpr_at_tpr80, 4)
    again = run_ood_benchmark(cfg, progress=False)
    assert again["timings_s"]["images_extracted"] == 0 and again["results"] == report["results"]


def test_making_the_views_counts_in_decode_their_passes_in_backbone(monkeypatch):
    """As TailedCore's views: rotating (slow for rot15flip's interpolated views) is `decode`,
    the backbone passes `backbone`."""
    import time

    from anomaly_inspect.features import extractor as ex_mod

    pause = 0.03

    class Backbone:
        def transform_config(self, size, crop, resize, max_pixels):
            from anomaly_inspect.data.transforms import TransformConfig
            return TransformConfig(size, crop, resize=resize, max_pixels=max_pixels)

        def forward_with_pooled(self, images):
            time.sleep(pause)
            return [images], images.mean(dim=(2, 3))

    def slow_views(images, kind):
        for k in range(3):
            time.sleep(pause)
            yield torch.rot90(images, k=k + 1, dims=(-2, -1))

    monkeypatch.setattr(ex_mod, "rotated_views", slow_views)
    extractor = ex_mod.FeatureExtractor(Backbone(), image_size=32, patches=False, pooled=True,
                                        views="rotflip")
    times = StageTimes()
    feats = extractor.features_of(torch.rand(2, 3, 32, 32), times=times)
    assert feats.pooled_views.shape == (2, 3, 3)
    # the three views' making, and the image's pass and the three views': were either counted
    # in the other stage too, it would hold 3 more pauses (2 of margin for a loaded machine)
    assert 3 * pause <= times.seconds["decode"] < 5 * pause
    assert 4 * pause <= times.seconds["backbone"] < 6 * pause
