"""StageTimes: per-stage seconds add up across calls; the extractor fills backbone / embed / decode."""

from __future__ import annotations

import time

import numpy as np
import pytest

from anomaly_inspect.resources import STAGES, StageTimes
from layout_writer import rgb_image, write_image


def test_stage_times_accumulate_and_keep_the_stage_order():
    times = StageTimes()
    for _ in range(2):
        with times("embed"):
            time.sleep(0.01)
    times.add("search", 0.5)
    out = times.to_dict()
    assert list(out)[:len(STAGES)] == list(STAGES)
    assert out["embed"] >= 0.02 and out["search"] == 0.5 and out["fit"] == 0.0


def test_stage_time_is_counted_when_the_stage_raises():
    times = StageTimes()
    with pytest.raises(ValueError), times("maps"):
        time.sleep(0.01)
        raise ValueError("boom")
    assert times.seconds["maps"] >= 0.01


def test_extractor_times_its_stages(tmp_path):
    import cv2

    from anomaly_inspect.features.backbone import Backbone
    from anomaly_inspect.features.extractor import FeatureExtractor
    from anomaly_inspect.pipeline import Runner

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    ex = FeatureExtractor(Backbone(weights="random", runtime="torch"), image_size=64, batch_size=2)
    times = StageTimes()
    feats = Runner(ex, progress=False, times=times).extract(paths, "x").features
    assert len(feats) == 3
    assert times.seconds["backbone"] > 0 and times.seconds["embed"] > 0 and times.seconds["decode"] > 0
    assert times.seconds["fit"] == times.seconds["search"] == 0.0


# TailedCore's view passes count in backbone / embed, not fit.
def test_tailedcore_view_passes_count_in_backbone_not_fit(tmp_path):
    """The rotated / flipped views' backbone passes were timed as the scorer's fit."""
    import torch.nn.functional as F

    from anomaly_inspect.core import Features, FitContext
    from anomaly_inspect.data.transforms import TransformConfig
    from anomaly_inspect.features.extractor import FeatureExtractor
    from anomaly_inspect.features.views import view_params
    from anomaly_inspect.pipeline import Runner

    pause = 0.05

    class SlowBackbone:  # two pooled "stages"; each pass takes ``pause``
        def transform_config(self, size, crop, resize, max_pixels):
            return TransformConfig(size, crop, resize=resize, max_pixels=max_pixels)

        def __call__(self, images):
            time.sleep(pause)
            return [F.avg_pool2d(images, 4), F.avg_pool2d(images, 8)]

    class ReadsViews:  # a scorer that reads the tail views at fit and does nothing else
        fit_views = "rotflip"

        def fit(self, features, labels=None, context=None):
            self.rows = sum(len(f) for f in context.views.iter_views([0, 1]))

        def fit_summary(self):
            return {}

    paths = [write_image(tmp_path / f"{i}.png", rgb_image(32, i)) for i in range(2)]
    ex = FeatureExtractor(SlowBackbone(), image_size=32, batch_size=2)
    runner = Runner(ex, progress=False)
    scorer = ReadsViews()
    context = runner.fit_context({"s": scorer}, paths, FitContext())
    start = time.perf_counter()
    runner.fit_features({"s": scorer}, Features(), context=context)  # features unread
    wall = time.perf_counter() - start
    n_views = len(view_params("rotflip"))
    assert scorer.rows == 2 * n_views
    times = runner.times.seconds
    assert times["backbone"] >= n_views * pause and times["embed"] > 0
    assert times["fit"] < n_views * pause / 2  # the scorer's own work: none here (was >= 7 pauses)
    assert sum(times.values()) == pytest.approx(wall, abs=0.02)  # the stages still sum to the total
