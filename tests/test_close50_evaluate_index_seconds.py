"""``evaluate`` records how much of stage ``fit`` was the search index's build."""

from __future__ import annotations

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.evaluation import evaluate as ev
from layout_writer import write_mvtec


def test_evaluate_records_the_index_build_seconds_within_the_fit(tmp_path):
    cfg = ModelConfig()
    cfg.backbone.weights, cfg.backbone.runtime = "random", "torch"
    cfg.features.image_size = 64
    result = ev.evaluate(load_mvtec(write_mvtec(tmp_path, n_train=3, n_good=2)), cfg,
                         progress=False)
    assert result.index_seconds is not None
    assert 0 <= result.index_seconds <= result.stage_seconds["fit"] + 1e-3
