"""The dataset registry behind ``--dataset``: by name, options by parameter name, clear errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from anomaly_inspect.data import folder as folder_module
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


# Unknown adapter options are refused.
def test_load_dataset_refuses_an_option_the_adapter_does_not_take(tmp_path):
    cat = write_mvtec(tmp_path, "w")
    with pytest.raises(TypeError, match=r"^dataset 'folder' does not take mask_dirs; it takes "
                                        r"train_dirs, .*mask_dir"):
        load_dataset("folder", train_dirs=[cat / "train" / "good"],
                     test_anomalous_dirs=[cat / "test" / "crack"], mask_dirs=cat / "ground_truth")
    # unset options of other adapters (as the CLI passes them all) are still ignored
    assert load_dataset("mvtec", root=tmp_path, category="w", mask_dir=None, train_dirs=[]).name == "w"


def test_the_evaluate_command_still_passes_its_flags_to_either_adapter(tmp_path, capsys):
    from anomaly_inspect.cli import main

    write_mvtec(tmp_path, "w")
    code = main(["evaluate", "--dataset", "mvtec", "--root", str(tmp_path), "--category", "w",
                 "--mask-dir", str(tmp_path), "--quiet"])
    assert code != 0 and "--dataset mvtec does not take --mask-dir" in capsys.readouterr().err


# One dataset-option check: load_dataset's, naming evaluate's flags.
PACKAGE = Path(__file__).resolve().parents[1] / "inspect" / "anomaly_inspect"


# ------------------------------------------------------------------ one dataset-option check


def test_a_required_option_without_a_flag_is_one_line_not_a_traceback(monkeypatch, capsys):
    """evaluate's own check looked the flag up in its table: KeyError (a traceback)."""
    from anomaly_inspect.cli import main

    def load_tokened(token: str, train_dirs=()):
        raise AssertionError("never reached")

    monkeypatch.setattr(folder_module, "load_tokened", load_tokened, raising=False)
    monkeypatch.setitem(registry.DATASETS, "tokened", "folder:load_tokened")
    assert main(["evaluate", "--dataset", "tokened", "--quiet"]) == 1
    assert capsys.readouterr().err == "error: --dataset tokened needs token (no flag sets it)\n"


def test_load_dataset_names_the_callers_flags(tmp_path):
    from anomaly_inspect.commands.evaluate import OPTION_FLAGS

    with pytest.raises(ValueError, match=r"^--dataset folder needs --train-dir$"):
        load_dataset("folder", OPTION_FLAGS, root=None, train_dirs=[])
    with pytest.raises(ValueError) as err:  # a user's error (the CLI's one line), not a TypeError
        load_dataset("folder", OPTION_FLAGS, train_dirs=[tmp_path], category="c")
    assert not isinstance(err.value, TypeError)
    assert str(err.value) == ("--dataset folder does not take --category; it takes --train-dir, "
                              "--test-normal-dir, --test-anomalous-dir, --mask-dir")
    with pytest.raises(TypeError, match=r"^dataset 'folder' does not take category; it takes "
                                        r"train_dirs, .*, name$"):  # without flags: as before
        load_dataset("folder", train_dirs=[tmp_path], category="c")


def test_every_required_adapter_option_has_an_evaluate_flag():
    from anomaly_inspect.commands.evaluate import OPTION_FLAGS

    options = {o for d in available_datasets() for kind in dataset_options(d) for o in kind}
    required = {o for d in available_datasets() for o in dataset_options(d)[0]}
    assert required <= set(OPTION_FLAGS) <= options
    assert options - set(OPTION_FLAGS) == {"name"}  # folder's display name: no flag


def test_evaluate_checks_the_options_once_in_load_dataset():
    tree = ast.parse((PACKAGE / "commands" / "evaluate.py").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "dataset_options" not in names
