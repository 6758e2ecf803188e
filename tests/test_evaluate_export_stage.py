"""``evaluate``'s one-time graph making (the ONNX export, int8 quantisation) is its own stage,
``export``, kept out of ``backbone``, ``fit_seconds`` / ``test_seconds`` and the img/s, and the
result says whether this run made one (``exported``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.evaluation import evaluate as ev
from anomaly_inspect.features import backbone as bb

SLOW = 0.5  # seconds each faked graph making takes on top of the real one


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small synthetic MVTec-layout category (with masks) under its own root."""
    root = tmp_path_factory.mktemp("tiny")
    return generate_dataset(root, "cat", "fabric", n_train=6, n_test_good=3, n_test_per_defect=1,
                            image_size=64, defects=("hole", "stain"))


def slowed(monkeypatch, name: str) -> list[str]:
    """``backbone.<name>`` (export_onnx / quantize_int8) made ``SLOW`` seconds slower; the
    returned list gets a name per call."""
    real, calls = getattr(bb, name), []

    def slow(*args, **kwargs):
        calls.append(name)
        time.sleep(SLOW)
        return real(*args, **kwargs)

    monkeypatch.setattr(bb, name, slow)
    return calls


def timed_evaluate(root: Path, **backbone) -> tuple[ev.EvaluationResult, float]:
    cfg = ModelConfig()
    cfg.features.image_size = 64
    for key, value in backbone.items():
        setattr(cfg.backbone, key, value)
    start = time.perf_counter()
    result = ev.evaluate(load_mvtec(root), cfg, progress=False)
    return result, time.perf_counter() - start


def test_a_cold_export_is_its_own_stage_outside_backbone_and_the_img_s(tiny, tmp_path, monkeypatch):
    """A first run (empty cache) exported on its first batch inside stage ``backbone`` and the
    timed fit, so its backbone time and img/s were not a warm run's."""
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    calls = slowed(monkeypatch, "export_onnx")
    cold, wall = timed_evaluate(tiny)
    assert calls and cold.exported
    stages = cold.stage_seconds
    assert stages["export"] >= SLOW * len(calls)
    assert stages["backbone"] < SLOW  # the export's seconds are not counted twice
    n = cold.n_train + cold.n_test
    assert cold.images_per_second == pytest.approx(n / (cold.fit_seconds + cold.test_seconds),
                                                   rel=0.01)
    assert cold.fit_seconds + cold.test_seconds + stages["export"] <= wall + 1e-3
    assert sum(v for k, v in stages.items() if k != "export") <= \
        cold.fit_seconds + cold.test_seconds + 1e-2  # the documented identity
    # the same run again: its graph is cached, nothing is made, the stage is there at 0
    calls.clear()
    warm, _ = timed_evaluate(tiny)
    assert not calls and not warm.exported
    assert list(warm.stage_seconds) == list(stages) and warm.stage_seconds["export"] == 0.0


def test_int8_quantisation_counts_in_export_not_backbone(tiny, tmp_path, monkeypatch):
    """At int8 the quantisation (made on the first batch, after the calibration) is one-time
    work as the f32 export is."""
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    calls = slowed(monkeypatch, "quantize_int8")
    result, _ = timed_evaluate(tiny, precision="int8")
    assert calls == ["quantize_int8"] and result.exported
    assert result.runtime == "onnxruntime int8"
    assert result.stage_seconds["export"] >= SLOW and result.stage_seconds["backbone"] < SLOW


def test_backbone_times_only_the_graphs_it_makes(tmp_path, monkeypatch):
    """``export_seconds`` grows with each export, not with a run from the cached graph."""
    import torch

    calls = slowed(monkeypatch, "export_onnx")
    x = torch.zeros(2, 3, 64, 64)
    first = bb.Backbone(weights="random", runtime="onnxruntime", cache_dir=tmp_path)
    assert first.export_seconds == 0.0
    first(x)
    assert calls and first.export_seconds >= SLOW
    again = bb.Backbone(weights="random", runtime="onnxruntime", cache_dir=tmp_path)
    again(x)
    assert len(calls) == 1 and again.export_seconds == 0.0


def test_printed_table_says_the_export_is_one_time_and_not_in_the_img_s(capsys):
    from anomaly_inspect.commands.evaluate import print_result

    fields = dict(category="c", method="patchcore", backbone="b", weights="random", image_size=64,
                  image_auroc=0.75, pixel_auroc=0.9, image_auroc_by_defect={"hole": 2 / 3},
                  n_train=6, n_test=5, n_test_anomalous=2, fit_seconds=1.0, test_seconds=1.0,
                  test_images_per_second=5.0, images_per_second=5.5, memory_bank_items=None,
                  memory_bank_mb=None, search_index=None, peak_rss_mb=100.0, config={})
    stages = {"decode": 0.1, "backbone": 0.5, "export": 3.1}
    print_result(ev.EvaluationResult(**fields, stage_seconds=stages, exported=True))
    assert "backbone 0.5 s, export 3.1 s (one-time, not in img/s)" in capsys.readouterr().out
    print_result(ev.EvaluationResult(**fields, stage_seconds={**stages, "export": 0.0}))
    table = capsys.readouterr().out
    assert "backbone 0.5 s" in table and "export" not in table
