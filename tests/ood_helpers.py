"""Fixtures and builders shared by the OOD benchmark's tests on a tiny synthetic category."""

from __future__ import annotations

from anomaly_inspect.evaluation.ood_benchmark import OODBenchmarkConfig


def heldout_config(root, tmp_path, scorers, **data) -> OODBenchmarkConfig:
    return OODBenchmarkConfig.from_dict({
        "benchmark": "mvtec_heldout", "splits": ["defects"], "scorers": scorers,
        "data": {"root": str(root), "category": "tiny", "id_groups": ["good"],
                 "ood_groups": {"defects": ["scratch", "stain"]}, "folds": 2, **data},
        "features": {"image_size": 64, "batch_size": 8}, "cache_dir": str(tmp_path / "cache")}, "c.yaml")
