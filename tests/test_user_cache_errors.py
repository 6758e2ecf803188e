"""A user cache the backbone's ONNX export cannot be written in ($ANOMALY_INSPECT_CACHE a file
or an unwritable folder, or the default folder so): the error names the setting and says to set
it to a writable folder, never to change the precision; at f32 the torch fallback says so."""

from __future__ import annotations

import errno
import logging

import numpy as np
import pytest
import torch

from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.files import reworded

FIX_PRECISION = "--precision f32"


def _backbone(**kw) -> Backbone:
    return Backbone("tf_efficientnet_lite0", weights="random", runtime="onnxruntime", **kw)


def _int8() -> Backbone:
    bb = _backbone(precision="int8")
    bb.calibrate(np.zeros((2, 3, 32, 32), np.float32))
    return bb


def _x() -> torch.Tensor:
    return torch.zeros(1, 3, 32, 32)


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    """$ANOMALY_INSPECT_CACHE set to a file."""
    path = tmp_path / "afile"
    path.write_text("x")
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(path))
    return path


def test_int8_with_the_cache_setting_a_file_names_the_setting_not_the_precision(cache_file):
    with pytest.raises(OSError) as err:
        _int8()(_x())
    text = str(err.value)
    assert text.startswith(f"$ANOMALY_INSPECT_CACHE {cache_file}: ")
    assert "is a file, not a folder" in text and text.endswith("; set it to a writable folder")
    assert FIX_PRECISION not in text


def test_f32_falls_back_to_torch_naming_the_cache_setting(cache_file, caplog):
    bb = _backbone()
    with caplog.at_level(logging.WARNING, "anomaly_inspect.features.backbone"):
        maps = bb(_x())
    assert all(torch.equal(a, b) for a, b in zip(maps, bb.torch_forward(_x()), strict=True))
    assert bb.runs_on == "torch (export failed)"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                  and r.name == "anomaly_inspect.features.backbone"]
    assert f"$ANOMALY_INSPECT_CACHE {cache_file}: " in warning
    assert "set it to a writable folder" in warning
    assert warning.endswith("running the backbone in torch")


def test_an_unwritable_default_cache_names_the_default_folder(tmp_path, monkeypatch):
    """No $ANOMALY_INSPECT_CACHE: the default folder (below the home folder) is named, and the
    setting that moves it; an unwritable folder (as ``files.replacing`` reports it)."""
    monkeypatch.delenv("ANOMALY_INSPECT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / ".cache" / "anomaly_inspect"

    def denied(model, layers, input_hw, outputs, path, record=None):
        raise reworded(PermissionError(errno.EACCES, "Permission denied"),
                       f"{path}: cannot write it (Permission denied)")

    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", denied)
    with pytest.raises(OSError) as err:
        _int8()(_x())
    text = str(err.value)
    assert text.startswith(f"the user cache {root} (the default): ")
    assert "cannot write it (Permission denied)" in text
    assert text.endswith("; set $ANOMALY_INSPECT_CACHE to a writable folder")
    assert FIX_PRECISION not in text and err.value.errno == errno.EACCES


def test_a_read_only_model_folder_falls_back_to_the_cache_and_names_it(tmp_path, cache_file):
    """A ``cache_dir`` that cannot be written falls back to the user cache; that failing too
    names the user cache's setting."""
    model = tmp_path / "model"
    model.write_text("not a folder")
    with pytest.raises(OSError, match=r"^\$ANOMALY_INSPECT_CACHE .*set it to a writable folder$"):
        _backbone(precision="int8", cache_dir=model).export((32, 32))


def test_other_export_failures_keep_the_precision_advice(monkeypatch, tmp_path):
    def broken(*a, **k):
        raise RuntimeError("unsupported operator Foo")

    # an empty cache of its own: an export cached by an earlier test would be reused, not made
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("anomaly_inspect.features.backbone.export_onnx", broken)
    with pytest.raises(Exception, match="unsupported operator Foo.*use --precision f32"):
        _int8()(_x())
