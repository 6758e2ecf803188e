"""ood-benchmark names a missing dataset root as such, with what a relative root was read
relative to (it said a file inside the dataset was missing, e.g. index.csv)."""

from pathlib import Path

import pytest

from anomaly_inspect.choices import ConfigError
from anomaly_inspect.evaluation.ood_benchmark import OODBenchmarkConfig, build_data


def _cfg(data):
    return OODBenchmarkConfig.from_dict({"benchmark": "mvtec_heldout", "splits": ["all"],
                                         "scorers": ["nan"], "data": data}, "m.yaml")


def test_a_relative_root_read_from_the_wrong_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg({"root": "../shared/data/mvtec_ad", "category": "bottle", "ood_groups": {"all": ["x"]}})
    with pytest.raises(ConfigError, match=r"m\.yaml: data\.root: .* is not a folder \(\.\./shared/data/mvtec_ad "
                                          r"is read relative to the current folder .*--data-root\)"):
        build_data(cfg)
    with pytest.raises(ConfigError, match=r"relative to --data-root /nonexist;"):
        build_data(cfg, Path("/nonexist"))


def test_an_absolute_root_is_named_without_a_hint(tmp_path):
    cfg = _cfg({"root": str(tmp_path / "gone"), "category": "bottle", "ood_groups": {"all": ["x"]}})
    with pytest.raises(ConfigError, match=r"data\.root: .*gone is not a folder$"):
        build_data(cfg, tmp_path)


def test_an_existing_root_still_reports_the_missing_category(tmp_path):
    cfg = _cfg({"root": str(tmp_path), "category": "bottle", "ood_groups": {"all": ["x"]}})
    with pytest.raises((ConfigError, ValueError, FileNotFoundError), match="bottle"):
        build_data(cfg)
