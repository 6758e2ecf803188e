"""Pooled rows with ``views`` (rotated / flipped copies of every image) in ood-benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_inspect.config import ConfigError
from anomaly_inspect.core import Features
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.evaluation import ood_benchmark
from anomaly_inspect.evaluation.ood import ood_metrics
from anomaly_inspect.evaluation.ood_benchmark import (
    OODBenchmarkConfig,
    build_data,
    fit_on_views,
    run_ood_benchmark,
    view_arrays,
    view_mean_scores,
)
from anomaly_inspect.pipeline import Runner, build_backbone, build_extractor
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


def test_view_arrays_are_each_images_views_in_order(ood_tiny, tmp_path):
    """Batched views (4 images a batch, 7 views each) come back per image, in view order:
    equal to extracting every image under each (angle, flip) separately."""
    cfg = _heldout(ood_tiny, tmp_path, ["mahalanobis"])
    cfg.features.batch_size = 4
    data, _ = build_data(cfg)
    samples = data.id_train + data.id_test[:1]  # 7: a batch of 4 and one of 3
    runner = Runner(build_extractor(cfg, build_backbone(cfg), outputs=("pooled",)), progress=False)
    got = view_arrays(runner, samples, "rotflip", None)
    assert got.shape[:2] == (7, 7)
    paths = [s.path for s in samples]
    # rotflip's order: angle 0 flipped, then 90, 180, 270 each plain and flipped
    order = [(a // 90, f) for a in (0, 90, 180, 270) for f in (False, True) if (a, f) != (0, False)]
    for v, (k, flip) in enumerate(order):
        want = runner.extract(paths, "one view", lambda x, k=k, flip=flip: _dihedral(x, k, flip)).features.pooled
        np.testing.assert_allclose(got[:, v], want, rtol=1e-5, atol=1e-6)


def test_a_view_mean_over_the_dihedral_group_does_not_depend_on_how_an_image_is_held(ood_tiny, tmp_path):
    """Mean score over the 8 dihedral views: an image rotated by 90 degrees or mirrored is the
    same set of views, so it scores the same (the group average is invariant)."""
    cfg = _heldout(ood_tiny, tmp_path, ["mahalanobis"])
    data, _ = build_data(cfg)
    runner = Runner(build_extractor(cfg, build_backbone(cfg), outputs=("pooled",)), progress=False)

    def stack(samples, image_fn=None):
        own = runner.extract([s.path for s in samples], "own", image_fn).features.pooled
        if image_fn is None:
            views = view_arrays(runner, samples, "rotflip", None)
        else:  # the views of the transformed image
            views = np.stack([runner.extract([s.path for s in samples], "v", lambda x, k=k, f=f: _dihedral(
                image_fn(x), k, f)).features.pooled for k, f in DIHEDRAL[1:]], axis=1)
        return np.concatenate([own[:, None], views], axis=1)

    scorer = Mahalanobis()
    fit_on_views(runner, "m", scorer, stack(data.id_train), data.id_train_labels)
    test = [Sample(p) for p in sorted((ood_tiny / "tiny" / "test").rglob("*.png"))[:4]]
    plain = view_mean_scores(runner, "m", scorer, stack(test))
    for k, flip in ((1, False), (0, True), (3, True)):
        moved = view_mean_scores(runner, "m", scorer, stack(test, lambda x, k=k, f=flip: _dihedral(x, k, f)))
        np.testing.assert_allclose(moved, plain, rtol=1e-4)


def test_fit_on_views_gives_every_view_its_images_label():
    class Recorder:
        def fit(self, features, labels=None, context=None):
            self.x, self.labels = features.pooled, labels

        def fit_summary(self):
            return {}

    stack = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    rec = Recorder()
    fit_on_views(_runner_stub(), "r", rec, stack, np.array([5, 7]))
    np.testing.assert_array_equal(rec.x, stack.reshape(6, 4))
    np.testing.assert_array_equal(rec.labels, [5, 5, 5, 7, 7, 7])


def _runner_stub():
    from anomaly_inspect.resources import StageTimes

    runner = Runner.__new__(Runner)
    runner.times = StageTimes()
    return runner


def test_view_mean_scores_average_each_images_views():
    class Sum:
        def score(self, features):
            from anomaly_inspect.scorers.base import ScoreResult
            return ScoreResult(features.pooled.sum(1))

    stack = np.array([[[1, 1], [3, 3]], [[0, 2], [4, 0]]], dtype=np.float32)  # 2 images x 2 views
    np.testing.assert_allclose(view_mean_scores(_runner_stub(), "s", Sum(), stack), [4.0, 3.0])


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
    assert report["timings_s"]["images_extracted"] == 8 * n_sets
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
