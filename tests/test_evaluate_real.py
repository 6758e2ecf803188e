"""End to end on real MVTec AD data: `anomaly-inspect evaluate` with the default config."""

from __future__ import annotations

import json

import pytest

from anomaly_inspect.cli import main

pytestmark = pytest.mark.slow


def test_evaluate_bottle_defaults(shared_data, tmp_path, capsys):
    out = tmp_path / "bottle.json"
    rc = main(["evaluate", "--root", str(shared_data / "mvtec_ad"), "--category", "bottle",
               "--output-json", str(out), "--quiet"])
    assert rc == 0
    result = json.loads(out.read_text())
    for key in ("image_auroc", "pixel_auroc", "n_train", "n_test", "fit_seconds", "test_seconds",
                "test_images_per_second", "memory_bank_items", "memory_bank_mb", "peak_rss_mb",
                "backbone", "method", "category"):
        assert key in result
    assert result["n_train"] == 209 and result["n_test"] == 83
    assert result["image_auroc"] >= 0.99
    assert result["pixel_auroc"] >= 0.96
    assert 0.93 <= result["pixel_aupro"] <= 1  # 0.961 on 2026-12-05
    assert result["image_fpr_at_tpr95"] <= 0.1  # 0.0: 20 test normals
    by_defect = result["image_auroc_by_defect"]
    assert set(by_defect) == {"broken_large", "broken_small", "contamination"}
    assert min(by_defect.values()) <= result["image_auroc"] <= max(by_defect.values()) + 1e-9
    assert result["runtime"] == "onnxruntime f32"  # the default runtime, no fallback
    stages = result["stage_seconds"]
    assert list(stages) == ["decode", "backbone", "embed", "fit", "search", "maps", "export"]
    assert all(v >= 0 for v in stages.values()) and stages["backbone"] > 0 and stages["maps"] > 0
    assert (stages["export"] > 0) == result["exported"]  # one-time, outside fit / test seconds
    assert sum(stages.values()) - stages["export"] <= \
        result["fit_seconds"] + result["test_seconds"] + 1e-2  # each figure rounded to 1 ms
    printed = capsys.readouterr().out
    assert "image AUROC" in printed and "time by stage" in printed and "pixel AUPRO" in printed


def test_evaluate_reports_missing_category(shared_data, capsys):
    rc = main(["evaluate", "--root", str(shared_data / "mvtec_ad"), "--category", "no_such", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no_such" in err


def test_bench_backbone_prints_throughput(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench-backbone", "--batch-size", "4", "--rounds", "1", "--image-size", "128",
                 "--runtime", "onnxruntime", "--output-json", str(out)]) == 0
    rows = json.loads(out.read_text())["runtimes"]
    assert [(r["runtime"], r["precision"]) for r in rows] == [
        ("torch", "f32"), ("onnxruntime", "f32"), ("onnxruntime", "int8")]
    assert all(r["images_per_second"] > 0 for r in rows)
    assert rows[1]["max_rel_diff_vs_torch"] < 1e-4  # the bundled weights, not only random ones
