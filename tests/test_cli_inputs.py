"""A folder of inputs that cannot be listed: an error where it was named, a warning below it;
never fewer images without a word."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.data.layout import expand_inputs, list_images


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def test_a_named_folder_that_cannot_be_listed_is_an_error_naming_it(tmp_path, unlistable):
    _image(tmp_path / "in" / "a.png")
    folder = unlistable(tmp_path / "in")
    for call in (lambda: list_images(folder), lambda: expand_inputs([str(folder)])):
        with pytest.raises(PermissionError) as info:  # before: "no images found" later on
            call()
        assert str(info.value) == f"{folder}: cannot list this folder (Permission denied)"


def test_fit_names_an_unreadable_train_folder(tmp_path, unlistable, capsys):
    _image(tmp_path / "in" / "a.png")
    folder = unlistable(tmp_path / "in")
    assert main(["fit", "--train", str(folder), "--out", str(tmp_path / "m"), "--quiet"]) == 1
    assert capsys.readouterr().err == f"error: {folder}: cannot list this folder (Permission denied)\n"


def test_a_folder_below_that_cannot_be_listed_is_left_out_with_a_warning(tmp_path, unlistable,
                                                                         caplog):
    for name in ("a.png", "ok/b.png", "locked/c.png"):
        _image(tmp_path / "in" / name)
    locked = unlistable(tmp_path / "in" / "locked")
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.layout"):
        found = list_images(tmp_path / "in")
    assert [p.name for p in found] == ["a.png", "b.png"]
    assert caplog.messages == [f"{locked}: cannot list this folder (Permission denied); the "
                               f"images in it are left out"]
