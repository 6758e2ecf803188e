"""ood-benchmark settings the ID-train images cannot meet (kNN's k, ViM's dim, a fusion's folds,
a fused member's cross-fitted banks) are refused once the data is read, before any extraction,
naming the config and the row; a cross-fitting error that still comes late names the fusion."""

from __future__ import annotations

import pytest

from anomaly_inspect.config import ConfigError
from anomaly_inspect.evaluation import ood_benchmark
from anomaly_inspect.evaluation.ood_benchmark import (
    OODBenchmarkConfig,
    build_data,
    run_ood_benchmark,
)
from anomaly_inspect.scorers import build_scorer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small synthetic MVTec-layout category (64 px): 8 train good, 4 test good, 2 + 2 defects
    (with folds 2: 6 ID-train images)."""
    from anomaly_inspect.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data"), "tiny", n_train=8, n_test_good=4,
                            n_test_per_defect=2, image_size=64, defects=("scratch", "stain")).parent


def _heldout(root, tmp_path, scorers, fusions=()) -> OODBenchmarkConfig:
    return OODBenchmarkConfig.from_dict({
        "benchmark": "mvtec_heldout", "splits": ["defects"], "scorers": scorers, "fusions": list(fusions),
        "data": {"root": str(root), "category": "tiny", "id_groups": ["good"],
                 "ood_groups": {"defects": ["scratch", "stain"]}, "folds": 2},
        "features": {"image_size": 64, "batch_size": 8}, "cache_dir": str(tmp_path / "cache")}, "c.yaml")


@pytest.fixture
def no_backbone(monkeypatch):
    """Building the backbone (the step before any extraction) fails the test."""
    def built(*args, **kwargs):
        raise RuntimeError("the backbone was built")

    monkeypatch.setattr(ood_benchmark, "build_backbone", built)


@pytest.mark.parametrize("name", ["knn", "knn_nan"])
def test_a_knn_k_above_the_id_train_images_is_refused_before_extraction(tiny, tmp_path, no_backbone, name):
    cfg = _heldout(tiny, tmp_path, ["nan", {"name": name, "params": {"k": 7}}])
    assert len(build_data(cfg)[0].id_train) == 6
    with pytest.raises(ConfigError, match=rf"^c\.yaml: scorer '{name}': "
                                          rf"{name}: k=7 but only 6 training images$"):
        run_ood_benchmark(cfg, progress=False)


def test_a_vim_dim_the_id_train_images_cannot_give_is_refused_before_extraction(tiny, tmp_path, no_backbone):
    cfg = _heldout(tiny, tmp_path, [{"name": "vim", "params": {"dim": 6, "hidden": 16}}])
    with pytest.raises(ConfigError, match=r"^c\.yaml: scorer 'vim': "
                                          r"vim needs more training images than dim=6, got 6$"):
        run_ood_benchmark(cfg, progress=False)


def test_fusion_folds_above_the_id_train_images_are_refused_before_extraction(tiny, tmp_path, no_backbone):
    cfg = _heldout(tiny, tmp_path, ["nan", "feature_norm"],
                   [{"label": "fused", "members": ["nan", "feature_norm"], "folds": 7}])
    with pytest.raises(ConfigError, match=r"^c\.yaml: fusion 'fused': cross-fitting needs 2 <= folds <= 6 "
                                          r"images, got 7$"):
        run_ood_benchmark(cfg, progress=False)


def test_a_fused_knn_whose_k_its_cross_fitted_banks_cannot_give_is_refused_before_extraction(
        tiny, tmp_path, no_backbone):
    """k = 4 fits the 6 ID-train images but not the 3 of each 2-fold bank."""
    cfg = _heldout(tiny, tmp_path, ["nan", {"name": "knn", "params": {"k": 4}}],
                   [{"label": "fused", "members": ["nan", "knn"], "folds": 2}])
    with pytest.raises(ConfigError, match=r"^c\.yaml: scorer 'knn' \(cross-fitted for fusion 'fused', 2 "
                                          r"folds\): knn: k=4 but only 3 training images$"):
        run_ood_benchmark(cfg, progress=False)


def test_the_whole_set_check_passes_the_settings_the_data_meets(tiny, tmp_path):
    cfg = _heldout(tiny, tmp_path, ["nan", {"name": "vim", "params": {"dim": 5, "hidden": 16}},
                                    {"name": "knn", "params": {"k": 3}}],
                   [{"label": "fused", "members": ["nan", "knn"], "folds": 2}])
    ood_benchmark.check_train_counts(cfg, 6)  # no error
    with pytest.raises(ConfigError, match=r"scorer 'vim'"):
        ood_benchmark.check_train_counts(cfg, 5)


def test_knn_exposes_the_bound_its_fit_applies():
    knn = build_scorer("knn", k=3)
    knn.check_train_count(3)
    with pytest.raises(ValueError, match=r"^knn: k=3 but only 2 training images$"):
        knn.check_train_count(2)


@pytest.mark.parametrize("member", ["feature_norm", "patchcore"])
def test_a_late_cross_fitting_error_names_the_config_and_the_fusion(tiny, tmp_path, monkeypatch, member):
    """Were the early check skipped, the fold draw's refusal names the fusion, for a pooled
    member (cross-fitted while the rows are scored) and a patch one (during the extraction)."""
    monkeypatch.setattr(ood_benchmark, "check_train_counts", lambda cfg, n: None)
    cfg = _heldout(tiny, tmp_path, ["nan", member], [{"label": "fused", "members": ["nan", member], "folds": 7}])
    with pytest.raises(ConfigError, match=r"^c\.yaml: fusion 'fused': cross-fitting needs 2 <= folds <= 6"):
        run_ood_benchmark(cfg, progress=False)
