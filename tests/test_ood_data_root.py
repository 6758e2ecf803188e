"""ood-benchmark names a missing dataset root as such, with what a relative root was read
relative to (it said a file inside the dataset was missing, e.g. index.csv)."""

from pathlib import Path

import pytest

from anomaly_inspect.choices import ConfigError
from anomaly_inspect.evaluation.ood_benchmark import OODBenchmarkConfig, build_data


def _cfg(root):
    return OODBenchmarkConfig.from_dict({"benchmark": "mvtec_heldout", "splits": ["all"],
                                         "scorers": ["nan"],
                                         "data": {"root": root, "category": "bottle",
                                                  "ood_groups": {"all": ["x"]}}}, "m.yaml")


def test_a_relative_root_read_from_the_wrong_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"m\.yaml: data\.root: .* is not a folder \(\.\./shared/data/mvtec_ad "
                                          r"is read relative to the current folder .*--data-root\)"):
        build_data(_cfg("../shared/data/mvtec_ad"))


def test_a_data_root_that_is_missing_or_does_not_hold_the_root(tmp_path):
    cfg = _cfg("mvtec_ad")
    with pytest.raises(ConfigError, match=r"relative to --data-root /nonexist, which is not a folder; "
                                          r"check data\.root and --data-root\)$"):
        build_data(cfg, Path("/nonexist"))
    with pytest.raises(ConfigError, match=r"which does not hold it; check data\.root and --data-root\)$"):
        build_data(cfg, tmp_path)


def test_an_absolute_root_is_named_without_a_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root: .*gone is not a folder$"):
        build_data(_cfg(str(tmp_path / "gone")), tmp_path)


def test_a_home_relative_root_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mvtec_ad").mkdir()
    # the root is found (the error is now about the category inside it)
    with pytest.raises(FileNotFoundError, match=r"mvtec_ad/bottle: category folder not found"):
        build_data(_cfg("~/mvtec_ad"))


def test_an_existing_root_reports_the_missing_category_and_where_it_is(tmp_path):
    (tmp_path / "mvtec_ad" / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"bottle: category folder not found .*; bottle is under "
                                                r".*mvtec_ad: pass that as the root"):
        build_data(_cfg(str(tmp_path)))
