"""A bundle's manifest states the preprocessing in the order ``screen`` runs it and the decoding
rules it applies: the resize / pad / crop runs on the decoded uint8 image, before x / 255 (an
outside scorer that scaled first, as "scale: pixel / 255" read, differed by up to 4e-3 and
flipped a decision), and a 16-bit image is x / 257 rounded (not OpenCV's x >> 8), a float one
[0, 1] -> [0, 255] clipped, a JPEG over the reduce threshold decoded at 1/2, 1/4 or 1/8 size
(before, the manifest said none of this)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly_inspect.config import BackboneConfig, FeatureConfig, ModelConfig
from anomaly_inspect.data.image_io import REDUCE_ABOVE_PIXELS, read_image
from anomaly_inspect.data.loader import decode_factor, reduced_side
from anomaly_inspect.data.transforms import TransformConfig, build_transform
from anomaly_inspect.screening import fit, load_model
from anomaly_inspect.screening.deploy import _decode_rules, export_model
from layout_writer import rgb_image, write_image
from test_deploy_manifest import resize_pad_crop  # the outside reimplementation's resize

# --- outside reimplementations of the preprocessing, from the manifest's fields --------------


def _normalise(x: np.ndarray, p: dict) -> np.ndarray:
    """(x - mean) / std on x already in [0, 1], as (3, S, S) float32."""
    x = (x - np.float32(p["mean"])) / np.float32(p["std"])
    return x.transpose(2, 0, 1).astype(np.float32)


def _uint8_first(rgb: np.ndarray, p: dict) -> np.ndarray:
    """The order the manifest states: resize / pad / crop on uint8, then x / 255."""
    return _normalise(resize_pad_crop(rgb, p)[0].astype(np.float32) / 255, p)


def _float_first(rgb: np.ndarray, p: dict) -> np.ndarray:
    """The order "scale: pixel / 255" alone suggested: x / 255 first, then resize in float."""
    return _normalise(resize_pad_crop(rgb.astype(np.float32) / 255, p)[0], p)


def _textured(h: int, w: int) -> np.ndarray:
    """An h x w RGB uint8 image with detail at every scale (the resize's rounding shows)."""
    return np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reduction_from_manifest(rule: dict, width: int, height: int) -> int:
    """The DCT reduction of a width x height JPEG by the manifest's ``reduced_jpeg`` alone."""
    if width * height <= rule["above_pixels"]:
        return 1
    keeps = [f for f in rule["factors"] if min(width, height) // f >= rule["min_side"]]
    return max(keeps, default=1)


def _jpeg(path: Path, width: int, height: int) -> Path:
    """A flat grey JPEG (cheap to encode at any size)."""
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


# --- the manifest's statements against what the toolkit does --------------------------------


@pytest.mark.parametrize("p", [
    {"image_size": 48, "crop_size": None, "resize": "stretch"},
    {"image_size": 48, "crop_size": 40, "resize": "pad"},
], ids=["stretch", "pad-crop"])
def test_the_stated_order_resizes_the_uint8_image_before_x_over_255(p):
    """Followed as stated (uint8 resize, then x / 255) the preprocessing matches the model's to
    1e-6; scaling first, as the old wording read, does not (the 8-bit rounding after the
    resize is lost)."""
    p = {**p, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    cfg = TransformConfig(image_size=p["image_size"], crop_size=p["crop_size"],
                          mean=tuple(p["mean"]), std=tuple(p["std"]), resize=p["resize"])
    rgb = _textured(37, 71)
    want, _, _ = build_transform(cfg)(rgb)
    np.testing.assert_allclose(_uint8_first(rgb, p), want, rtol=0, atol=1e-6)
    assert np.abs(_float_first(rgb, p) - want).max() > 1e-3


def test_the_manifest_order_places_x_over_255_after_the_uint8_resize(tmp_path):
    for i in range(4):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    cfg = ModelConfig(backbone=BackboneConfig(weights="random", runtime="onnxruntime"),
                      features=FeatureConfig(image_size=64, crop_size=48, resize="pad"))
    model = fit([tmp_path / "train"], cfg, calibration_fraction=0.5, progress=False)
    export_model(model.save(tmp_path / "model"), tmp_path / "bundle")
    p = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["preprocess"]
    order = p["order"]
    steps = ["decode", "uint8", "INTER_LINEAR", "BORDER_REFLECT_101", "centre crop",
             "x / 255", "(x - mean) / std"]
    at = [order.find(s) for s in steps]
    assert -1 not in at and at == sorted(at), order
    assert p["decode"] == _decode_rules(64)
    # the model's preprocessing of a decoded image, as the bundle's manifest states it
    transform = build_transform(load_model(tmp_path / "bundle").extractor.transform)
    image = read_image(write_image(tmp_path / "wide.png", _textured(30, 90)))
    want, _, _ = transform(image)
    np.testing.assert_allclose(_uint8_first(image, p), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("image_size", [64, 300, 1100])
def test_the_decode_entry_states_the_reduced_jpeg_rule_the_loader_applies(tmp_path, image_size):
    """The threshold and the side kept come from the code's constants; following the entry
    gives the factor the loader decodes at (1/8, 1/4 and full size here; a JPEG of exactly the
    threshold's pixels is not reduced)."""
    rule = _decode_rules(image_size)["reduced_jpeg"]
    assert rule["above_pixels"] == REDUCE_ABOVE_PIXELS
    assert rule["min_side"] == reduced_side(image_size)
    assert f"{REDUCE_ABOVE_PIXELS:,}" in rule["rule"]
    side = int(np.sqrt(REDUCE_ABOVE_PIXELS))
    sizes = {"big": (side + 96, side + 100), "exact": (side, REDUCE_ABOVE_PIXELS // side)}
    paths = {name: _jpeg(tmp_path / f"{name}.jpg", *wh) for name, wh in sizes.items()}
    for name, (width, height) in sizes.items():
        assert _reduction_from_manifest(rule, width, height) == decode_factor(paths[name],
                                                                              image_size)
    big, exact = paths["big"], paths["exact"]
    assert decode_factor(big, image_size) == {64: 8, 300: 4, 1100: 1}[image_size]
    assert decode_factor(exact, image_size) == 1


def test_the_decode_entry_states_the_sample_rules_read_image_applies(tmp_path):
    """16-bit: round(x / 257), not OpenCV's x >> 8; float: [0, 1] -> [0, 255], clipped, NaN 0;
    alpha dropped: each stated and what ``read_image`` does (the orientation: stated)."""
    samples = _decode_rules(64)["samples"]
    assert samples["uint16"].startswith("round(x / 257)") and "x >> 8" in samples["uint16"]
    assert "clipped to [0, 1]" in samples["float"] and "NaN -> 0" in samples["float"]
    entry = _decode_rules(64)
    assert "dropped" in entry["channels"] and "orientation" in entry["orientation"]

    wide = np.arange(0, 65536, 97, dtype=np.uint16)[:675].reshape(15, 45)
    cv2.imwrite(str(tmp_path / "w.png"), wide)
    got = read_image(tmp_path / "w.png")[..., 0]
    assert np.array_equal(got, np.round(wide / 257).astype(np.uint8))
    assert not np.array_equal(got, (wide >> 8).astype(np.uint8))  # OpenCV's IMREAD_COLOR

    flt = np.array([[-0.5, 0.0, 0.3, 0.5, 1.0, 1.7, np.nan, np.inf]], np.float32)
    cv2.imwrite(str(tmp_path / "f.tiff"), flt)
    got = read_image(tmp_path / "f.tiff")[..., 0]
    clipped = np.clip(np.nan_to_num(flt, nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
    assert got.tolist() == np.floor(clipped * 255 + 0.5).astype(np.uint8).tolist()

    rgba = np.dstack([_textured(8, 8), np.zeros((8, 8), np.uint8)])  # fully transparent
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGB))
