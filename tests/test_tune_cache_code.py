"""tune's caches (stage maps, synthetic-anomaly sets) are keyed by the package's code, as
ood-benchmark's are: after an upgrade that changes decoding, transforms or the drawing, tune
extracts and draws again instead of serving the old version's arrays."""

from __future__ import annotations

import importlib

import cv2
import pytest

from anomaly_inspect.data.synthetic import render_sample
from anomaly_inspect.features import cache as feature_cache
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.tuning import stage_cache
from anomaly_inspect.tuning.tune import TuneSettings, fold_plan, synthetic_set

tune = importlib.import_module("anomaly_inspect.tuning.tune")  # the package exports a function of that name


def _pngs(folder, n):
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        cv2.imwrite(str(p), render_sample("fabric", None, i, 64).clean[..., ::-1])
        paths.append(p)
    return paths


def test_stage_maps_are_extracted_again_after_a_code_change(tmp_path, monkeypatch):
    paths = _pngs(tmp_path / "train", 3)

    def maps():
        return stage_cache.stage_maps(Backbone(layers=[2, 3], runtime="torch", weights="random"),
                                      paths, 64, "stretch", tmp_path / "cache", progress=False)

    monkeypatch.setattr(stage_cache, "code_fingerprint", lambda include=(): "version-a")
    first = maps()
    assert maps().directory == first.directory  # the same code: reused
    monkeypatch.setattr(stage_cache, "code_fingerprint", lambda include=(): "version-b")
    assert maps().directory != first.directory


def test_synthetic_sets_are_drawn_again_after_a_code_change(tmp_path, monkeypatch):
    paths = _pngs(tmp_path / "train", 6)
    settings = TuneSettings(n_folds=2)
    _, folds, fams = fold_plan(6, settings)
    monkeypatch.setattr(tune, "code_fingerprint", lambda include=(): "version-a")
    first = synthetic_set(paths, folds, fams, settings, tmp_path / "cache")
    assert synthetic_set(paths, folds, fams, settings, tmp_path / "cache") == first
    monkeypatch.setattr(tune, "code_fingerprint", lambda include=(): "version-b")
    assert synthetic_set(paths, folds, fams, settings, tmp_path / "cache")[0].parent != first[0].parent


@pytest.mark.parametrize("rel, moves", [("data/image_io.py", True), ("tuning/stage_cache.py", True),
                                        ("tuning/tune.py", False), ("commands/tune.py", False)])
def test_the_stage_map_fingerprint_covers_decoding_and_the_extracting_module(tmp_path, monkeypatch,
                                                                              rel, moves):
    src = tmp_path / "anomaly_inspect"
    for name in ("data/image_io.py", "tuning/stage_cache.py", "tuning/tune.py", "commands/tune.py"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("x = 1\n")
    monkeypatch.setattr(feature_cache, "__file__", str(src / "features" / "cache.py"))
    include = ("tuning/stage_cache.py",)
    before = feature_cache.code_fingerprint(include=include)
    (src / rel).write_text("x = 2\n")
    assert (feature_cache.code_fingerprint(include=include) != before) == moves
