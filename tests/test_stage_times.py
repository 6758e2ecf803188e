"""StageTimes: per-stage seconds add up across calls; the extractor fills backbone / embed / decode."""

from __future__ import annotations

import time

import numpy as np
import pytest

from anomaly_inspect.resources import STAGES, StageTimes


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
