"""An int8 graph's name (and the feature cache keys of its features) hold what it is made from:
the calibration images, the quantisation settings and the onnxruntime version that quantised it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomaly_inspect.features import backbone as bbmod
from anomaly_inspect.features import runtime as rt
from anomaly_inspect.features.cache import precision_key


@pytest.fixture(scope="module")
def int8_backbone(tmp_path_factory):
    return bbmod.Backbone("tf_efficientnet_lite0", weights="random", runtime="onnxruntime",
                          precision="int8", cache_dir=tmp_path_factory.mktemp("int8"))


def _keys(bb, images):
    bb.calibrate(images)
    return bb._int8_path(Path("/c/g.onnx")), precision_key(bb)["calibration"]


def test_the_int8_key_holds_the_images_the_settings_and_the_onnxruntime_version(
        int8_backbone, monkeypatch):
    import onnxruntime

    images = np.zeros((2, 3, 8, 8), np.float32)
    path, key = _keys(int8_backbone, images)
    assert path.parent == Path("/c") and path.name.startswith("g-int8-")
    assert path.name == f"g-int8-{int8_backbone.calibration_digest}.onnx"
    assert _keys(int8_backbone, images) == (path, key)  # stable
    changed = {"images": lambda: _keys(int8_backbone, images + 1)}
    for what, value in (("INT8_FORMAT", rt.INT8_FORMAT + 1), ("__version__", "0.0.1")):
        def under(what=what, value=value):
            with monkeypatch.context() as m:
                m.setattr(rt if what == "INT8_FORMAT" else onnxruntime, what, value)
                return _keys(int8_backbone, images)
        changed[what] = under
    seen = {(path, key)}
    for what, keys in changed.items():
        got = keys()
        assert got[0] != path and got[1] != key, what  # a new graph name and feature cache key
        seen.add(got)
    assert len(seen) == 4
    assert rt.calibration_digest(images) not in path.name  # not the images' digest alone


def test_a_saved_model_finds_its_int8_graph_whatever_key_named_it(tmp_path):
    """A saved model's folder holds the one int8 graph it was fitted with: found by the f32
    export's name, so that models saved before the key held the quantiser still load."""
    old = tmp_path / f"g-int8-{rt.calibration_digest(np.zeros((2, 3, 8, 8), np.float32))}.onnx"
    old.write_bytes(b"graph")
    loaded = bbmod.Backbone("tf_efficientnet_lite0", weights="random", runtime="onnxruntime",
                            precision="int8", cache_dir=tmp_path)  # not calibrated: a loaded model
    assert loaded._int8_path(tmp_path / "g.onnx") == old
