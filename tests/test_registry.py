"""The dataset registry behind ``--dataset``: by name, options by parameter name, clear errors."""

from __future__ import annotations

import pytest

from anomaly_inspect.data import registry
from anomaly_inspect.data.registry import available_datasets, dataset_options, load_dataset
from layout_writer import rgb_image, write_image, write_mvtec


def test_registered_datasets_and_their_options():
    assert available_datasets() == ["folder", "mvtec"]
    assert dataset_options("mvtec") == (["root"], ["category"])
    assert dataset_options("folder")[0] == ["train_dirs"]


def test_load_by_name_ignores_unset_and_foreign_options(tmp_path):
    write_mvtec(tmp_path, "widget")
    ds = load_dataset("mvtec", root=tmp_path, category="widget", train_dirs=[], mask_dir=None)
    assert ds.name == "widget" and len(ds.train) > 0 and len(ds.test) > 0


def test_folder_dataset_by_name(tmp_path):
    for i in range(3):
        write_image(tmp_path / "good" / f"{i}.png", rgb_image(seed=i))
        write_image(tmp_path / "bad" / f"{i}.png", rgb_image(seed=10 + i))
    ds = load_dataset("folder", train_dirs=[tmp_path / "good"],
                      test_anomalous_dirs=[tmp_path / "bad"])
    assert (len(ds.train), len(ds.test), [s.label for s in ds.test]) == (3, 3, [1, 1, 1])


def test_errors_name_the_dataset_and_what_is_missing():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; available: folder, mvtec"):
        load_dataset("nope")
    with pytest.raises(ValueError, match=r"dataset 'mvtec' needs root$"):
        load_dataset("mvtec", category="bottle")


def test_a_new_dataset_is_one_registry_line(monkeypatch, tmp_path):
    """A module-level adapter registered by one line is reachable by name (as the CLI does)."""
    monkeypatch.setitem(registry.DATASETS, "twin", "folder:load_folders")
    write_image(tmp_path / "good" / "0.png", rgb_image())
    assert len(load_dataset("twin", train_dirs=[tmp_path / "good"]).train) == 1


def test_cli_names_the_missing_flag(tmp_path, capsys):
    from anomaly_inspect.cli import main

    code = main(["evaluate", "--dataset", "folder", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "--dataset folder needs --train-dir" in err
