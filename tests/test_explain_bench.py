"""docs/bench_explain.py times what explaining really costs, also when nothing is flagged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from anomaly_inspect.data import image_io
from anomaly_inspect.data.transforms import ImageTransform
from anomaly_inspect.screening.model import ScoredBatch
from layout_writer import rgb_image, write_image
from test_explain import SIZE, D, _hand_made, _scored

BENCH = Path(__file__).resolve().parents[1] / "docs" / "bench_explain.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_explain", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_scoring(tmp_path, flagged: bool):
    """The hand-made model of test_explain, scoring one image on disk (flagged or not)."""
    model, train, _ = _hand_made(tmp_path)
    path = write_image(tmp_path / "test.png", rgb_image(SIZE, seed=5))
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 3.0 / np.sqrt(D)
    scored = _scored(model, test, path)
    scored.flagged = flagged
    x, _, _ = ImageTransform(model.extractor.transform)(rgb_image(SIZE, seed=5))
    model.iter_score = lambda paths, keep_maps=True, explain_top=0: [ScoredBatch([scored], {0: x})]
    model.score = lambda paths: None
    return model, path


def test_the_bench_reads_only_the_header_of_a_flagged_image(tmp_path, monkeypatch):
    model, path = _model_scoring(tmp_path, flagged=True)
    decoded = []
    decode = image_io._decode
    monkeypatch.setattr(image_io, "_decode", lambda p, *a, **k: (decoded.append(Path(p)),
                                                                 decode(p, *a, **k))[1])
    cost = _bench().explain_vs_rescore(model, [path], top=2)
    assert cost["n_flagged"] == 1 and cost["top_equals_score"] == 1
    assert decoded and path not in decoded  # training images only


def test_the_bench_with_no_flagged_image_says_so(tmp_path):
    model, path = _model_scoring(tmp_path, flagged=False)
    assert _bench().explain_vs_rescore(model, [path], top=2)["n_flagged"] == 0
