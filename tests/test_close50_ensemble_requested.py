"""``evaluate --auto --ensemble K``: the JSON's ``ensemble`` block records the K asked, so that a
reader of that block alone sees when fewer members were fused."""

from __future__ import annotations

import json
from types import SimpleNamespace

from anomaly_inspect.cli import main
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.evaluation.evaluate import EvaluationResult


def test_the_ensemble_block_records_the_size_asked(tmp_path, monkeypatch, capsys):
    from anomaly_inspect.commands import evaluate as command
    from anomaly_inspect.evaluation import evaluate as ev
    from anomaly_inspect.tuning import judge

    root = generate_dataset(tmp_path / "data", "cat", "fabric", n_train=4, n_test_good=2,
                            n_test_per_defect=1, image_size=64, defects=("hole",))
    tuning = SimpleNamespace(chosen_config=lambda cfg: cfg, to_dict=lambda: {"chosen": "base"})
    monkeypatch.setattr(command, "run_tune", lambda paths, args, cfg: tuning)
    result = EvaluationResult(
        category="c", method="patchcore", backbone="b", weights="random", image_size=64,
        image_auroc=0.75, pixel_auroc=0.9, image_auroc_by_defect={"hole": 0.75}, n_train=4,
        n_test=3, n_test_anomalous=1, fit_seconds=1.0, test_seconds=1.0,
        test_images_per_second=3.0, images_per_second=3.5, memory_bank_items=None,
        memory_bank_mb=None, search_index=None, peak_rss_mb=100.0, config={})
    monkeypatch.setattr(ev, "evaluate", lambda *args, **kwargs: result)
    monkeypatch.setattr(judge, "evaluate_ensemble",  # 2 distinct members of the 3 asked
                        lambda *args, **kwargs: {"members": ["a", "b"], "image_auroc": 0.8})
    out = tmp_path / "r.json"
    assert main(["evaluate", "--root", str(root), "--auto", "--ensemble", "3", "--quiet",
                 "--output-json", str(out)]) == 0
    block = json.loads(out.read_text())["ensemble"]
    assert block["members"] == ["a", "b"] and block["requested"] == 3
    assert "2 of the 3 asked" in capsys.readouterr().out
