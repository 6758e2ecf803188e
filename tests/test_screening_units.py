"""Screening building blocks without a backbone: labels, report charts, model directory."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.screening.html_report import histogram_svg, roc_points
from anomaly_inspect.screening.labels import load_labels_csv, mvtec_label, resolve_labels
from anomaly_inspect.screening.model_dir import (
    MODEL_JSON,
    ModelFormatError,
    ModelInfo,
    read_model_info,
    save_model_dir,
)
from anomaly_inspect.screening.runner import image_key


def test_labels_csv(tmp_path):
    (tmp_path / "l.csv").write_text("path,label\na b/ü.png,anomalous\nx.png,0\n/abs/y.png,1\n",
                                    encoding="utf-8")
    table = load_labels_csv(tmp_path / "l.csv")
    assert table[str(tmp_path / "a b" / "ü.png")] == 1
    assert table[str(tmp_path / "x.png")] == 0 and table["/abs/y.png"] == 1
    (tmp_path / "bad.csv").write_text("path,label\nx.png,maybe\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: label 'maybe'"):
        load_labels_csv(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("file,y\nx.png,1\n")
    with pytest.raises(ValueError, match="'path' and 'label'"):
        load_labels_csv(tmp_path / "cols.csv")


def test_mvtec_labels():
    assert mvtec_label("/d/bottle/test/good/000.png") == 0
    assert mvtec_label("/d/bottle/test/broken_large/000.png") == 1
    assert mvtec_label("/d/bottle/train/good/000.png") is None
    paths = ["/d/test/good/1.png", "/d/test/crack/2.png"]
    labels, src = resolve_labels(paths, None)
    assert labels == {paths[0]: 0, paths[1]: 1} and "MVTec" in src
    assert resolve_labels(paths + ["/elsewhere/3.png"], None) == ({}, "")  # auto needs all
    assert resolve_labels(paths, "none") == ({}, "")


def test_roc_points_by_hand():
    # scores 4(pos) 3(neg) 2(pos) 1(neg): ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    fpr, tpr = roc_points(np.array([1, 0, 1, 0]), np.array([4.0, 3.0, 2.0, 1.0]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    # a tie between a positive and a negative is one diagonal step
    fpr, tpr = roc_points(np.array([1, 0]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(fpr, [0, 1]) and np.testing.assert_allclose(tpr, [0, 1])


def test_histogram_counts_all_scores():
    scores = np.array([1.0, 1.1, 5.0, 9.0])
    svg = histogram_svg(scores, np.array([0, 0, 1, -1]), threshold=4.0, bins=4)
    assert svg.count('class="bar"') == 3  # one bar each: 2 normal, 1 anomalous, 1 unlabelled
    assert 'id="threshold"' in svg and "normal: 2" in svg


def test_image_key_is_safe_and_unique():
    a, b = image_key("/x/test/good/000.png"), image_key("/x/test/crack/000.png")
    assert a != b and a.startswith("000_")
    assert image_key("/x/ü ñ?.png").isascii()
    # a raw byte 0xE9 and the text "\\xe9" display alike but are two files: two keys
    raw = os.fsdecode(b"/x/lat\xe9n.png")
    assert image_key(raw) != image_key("/x/lat\\xe9n.png")
    assert image_key("/x/ü.png") == image_key(os.fsdecode("/x/ü.png".encode()))  # UTF-8: as before


def _fitted_scorer() -> PatchCore:
    rng = np.random.default_rng(0)
    sc = PatchCore(coreset_ratio=0.5, progress=False)
    return sc.fit(Features(patches=rng.normal(size=(4, 3, 3, 8)).astype(np.float32)))


def _info() -> ModelInfo:
    return ModelInfo(config={}, backbone={"name": "b", "weights": {"checksum": "abc"}},
                     calibration={}, train_images=["a.png"], calibration_images=["b.png"])


def test_model_dir_save_refuses_overwrite_and_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "model"
    save_model_dir(target, _info(), _fitted_scorer())
    assert read_model_info(target).train_images == ["a.png"]
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        save_model_dir(target, _info(), _fitted_scorer())
    # a crash while writing the new model leaves the old one intact and no temp folder
    scorer = _fitted_scorer()
    monkeypatch.setattr(scorer, "save", lambda d: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_model_dir(target, _info(), scorer, overwrite=True)
    assert read_model_info(target).train_images == ["a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # a crash on a fresh target leaves nothing that could load
    with pytest.raises(OSError):
        save_model_dir(tmp_path / "new", _info(), scorer)
    assert not (tmp_path / "new").exists()
    # never replace a folder that is not a model directory, even with overwrite
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a model directory"):
        save_model_dir(other, _info(), _fitted_scorer(), overwrite=True)
    assert (other / "precious.txt").exists()


def test_model_dir_refuses_other_format_version(tmp_path):
    target = save_model_dir(tmp_path / "m", _info(), _fitted_scorer())
    data = json.loads((target / MODEL_JSON).read_text())
    data["format_version"] = 99
    (target / MODEL_JSON).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match="format version 99"):
        read_model_info(target)
    with pytest.raises(ModelFormatError, match="not a model directory"):
        read_model_info(tmp_path)


def test_a_shipped_models_load_error_names_the_drivers_model_directory(tmp_path):
    """A worker loads a shipped model from its private copy; the error names the directory the
    model was shipped from, not that copy (which the user never sees)."""
    from anomaly_inspect.screening.remote import load_remote_model

    class Shipped:
        def get(self):
            return {"model.json": b"{not json"}

    with pytest.raises(ValueError) as info:
        load_remote_model(None, Shipped(), None, "/data/models/bottle")
    assert str(info.value).startswith("/data/models/bottle/model.json: unreadable model description")
    assert "anomaly-inspect-model-" not in str(info.value)


def test_written_scores_give_the_decision_against_the_kept_threshold():
    """results.csv's score reads back as the same float64, so `score > threshold` on the file
    (threshold as screen.json keeps it) is the decision, also at the threshold itself (a
    9-digit score, 3.29075885, read back above a threshold of 3.2907588481903076)."""
    import math

    from anomaly_inspect.screening.runner import _fmt

    threshold = float(np.float32(3.2907588481903076))
    assert float(_fmt(np.float32(threshold))) == threshold
    assert not float(_fmt(np.float32(threshold))) > threshold
    values = np.random.default_rng(0).random(1000).astype(np.float32) * 10
    assert all(float(_fmt(v)) == float(v) for v in values)
    assert _fmt(math.nan) == ""
