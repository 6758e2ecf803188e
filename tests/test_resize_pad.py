"""Aspect-preserving resize ("pad"): content boxes by hand, mirrored padding, patch validity,
and scorers that ignore the padding."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from anomaly_inspect.config import ConfigError, FeatureConfig
from anomaly_inspect.data.transforms import Box, TransformConfig, build_transform
from anomaly_inspect.features.extractor import Features, valid_grid
from anomaly_inspect.scorers.patchcore import PatchCore
from layout_writer import link_subset


def test_content_box_by_hand():
    pad = TransformConfig(320, resize="pad")
    # 100 x 200 (h x w): scale 1.6 -> 160 x 320, centred vertically: 80 rows above, 80 below
    assert pad.content_box(100, 200) == Box(80, 0, 160, 320)
    assert pad.content_box(300, 100) == Box(0, 106, 320, 107)  # 106.67 -> 107 wide; (320-107)//2 = 106
    assert pad.content_box(50, 50) == Box(0, 0, 320, 320)
    assert TransformConfig(320, resize="stretch").content_box(100, 200) == Box(0, 0, 320, 320)
    # centre crop 256 of 320: offset 32; rows 80..240 -> 48..208, columns 0..320 -> 0..256
    assert TransformConfig(320, 256, resize="pad").content_box(100, 200) == Box(48, 0, 160, 256)


def test_box_on_grid_by_hand():
    # 40 x 40 cells of 8 px over 320 px; centres 4, 12, ...: rows 80..240 hold centres of cells 10..29
    assert Box(80, 0, 160, 320).on_grid(320, (40, 40)) == Box(10, 0, 20, 40)
    # a box thinner than a cell still gets the cell under its centre (101.5 // 8 = 12)
    assert Box(100, 0, 3, 320).on_grid(320, (40, 40)) == Box(12, 0, 1, 40)
    valid = valid_grid([Box(80, 0, 160, 320)], 320, (40, 40))
    assert valid.shape == (1, 40, 40) and valid.sum() == 20 * 40 and valid[0, 10:30].all()
    assert valid_grid([Box(0, 0, 320, 320)], 320, (40, 40)) is None  # no padding: no mask


def test_pad_transform_mirrors_and_pads_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    mask = np.zeros((100, 200), np.uint8)
    mask[40:60, 90:110] = 255
    t = build_transform(TransformConfig(320, mean=(0.5,) * 3, std=(0.5,) * 3, resize="pad"))
    chw, out_mask, box = t(image, mask)
    assert chw.shape == (3, 320, 320) and out_mask.shape == (320, 320)
    assert box == Box(80, 0, 160, 320)
    resized = cv2.resize(image, (320, 160), interpolation=cv2.INTER_LINEAR)
    expected = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(chw[:, 80:240].transpose(1, 2, 0), expected, atol=1e-5)
    # BORDER_REFLECT_101: the row above the content mirrors the second content row
    np.testing.assert_array_equal(chw[:, 79], chw[:, 81])
    np.testing.assert_array_equal(chw[:, 239 + 1], chw[:, 238])
    assert out_mask[:80].max() == 0 and out_mask[240:].max() == 0 and out_mask[80:240].max() == 255


def test_pad_equals_stretch_for_square_images():
    image = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    a, _, box_a = build_transform(TransformConfig(320, resize="pad"))(image)
    b, _, box_b = build_transform(TransformConfig(320, resize="stretch"))(image)
    np.testing.assert_array_equal(a, b)
    assert box_a == box_b == Box(0, 0, 320, 320)


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ConfigError, match="resize must be one of"):
        FeatureConfig(resize="crop")
    with pytest.raises(ValueError, match="resize must be one of"):
        TransformConfig(resize="squash")


def _features_with_padding(value_on_padding: float, n: int = 3) -> Features:
    """n images of a 2 x 4 grid of 2-d patches; the last column is padding."""
    rng = np.random.default_rng(0)
    patches = rng.normal(0, 0.01, (n, 2, 4, 2)).astype(np.float32)
    patches[:, :, 3] = value_on_padding
    valid = np.ones((n, 2, 4), bool)
    valid[:, :, 3] = False
    return Features(patches=patches, valid=valid)


def test_patchcore_ignores_padding_in_bank_and_scores():
    train = _features_with_padding(50.0)
    pc = PatchCore(coreset_ratio=1.0, index="flat", progress=False).fit(train)
    assert pc.bank_size == 3 * 2 * 3  # the 6 padding patches never enter the bank
    assert np.abs(pc.memory_bank).max() < 1.0
    test = _features_with_padding(1000.0, n=1)
    test.patches[0, 1, 1] = (3.0, 4.0)  # one anomalous patch on the image, ~5 from the bank
    result = pc.score(test)
    assert result.image_scores[0] == pytest.approx(5.0, abs=0.1)  # not ~1000 (padding)
    grid = result.patch_scores[0]
    assert grid[:, 3].max() == pytest.approx(grid[:, :3].min())  # padding shown at the image's low


def test_patchcore_padding_with_approximate_index():
    train = _features_with_padding(50.0, n=40)
    pc = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    test = _features_with_padding(1000.0, n=2)
    test.patches[1, 0, 2] = (0.0, 2.0)
    scores = pc.score(test).image_scores
    assert scores[0] < 0.1 and scores[1] == pytest.approx(2.0, abs=0.1)


def test_features_concat_and_subset_keep_validity():
    a = _features_with_padding(0.0, n=2)
    b = Features(patches=np.zeros((1, 2, 4, 2), np.float32))  # no padding in this part
    both = Features.concat([a, b])
    assert both.valid.shape == (3, 2, 4) and both.valid[2].all() and not both.valid[0, 0, 3]
    assert both.subset([2, 0]).valid[1].sum() == 6


def test_old_model_without_resize_loads_as_stretch(tmp_path, shared_data):
    """A model saved before ``features.resize`` existed was fitted on stretched inputs."""
    from anomaly_inspect.cli import main
    from anomaly_inspect.screening import load_model

    train = tmp_path / "train"
    link_subset(shared_data / "mvtec_ad" / "bottle" / "train" / "good", train, 8)
    model = tmp_path / "model"
    assert main(["fit", "--train", str(train), "--out", str(model), "--image-size", "64",
                 "--calibration-fraction", "0.25", "--resize", "pad", "--quiet"]) == 0
    fitted = load_model(model)
    assert fitted.cfg.features.resize == "pad"
    # a tall image (h > w): its map covers the image's cells only (8 rows, fewer columns)
    tall = next(p for p in sorted((shared_data / "magnetic_tile" / "magnetic_tile" / "test"
                                   / "good").glob("*.jpg")) if cv2.imread(str(p)).shape[0] >
                cv2.imread(str(p)).shape[1] * 1.3)
    (scored,) = fitted.score([tall])
    assert scored.patch_scores.shape[0] == 8 and scored.patch_scores.shape[1] < 7
    assert np.isfinite(scored.patch_scores).all() and np.isfinite(scored.score)
    old = tmp_path / "old"
    shutil.copytree(model, old)
    info = json.loads((old / "model.json").read_text())
    del info["config"]["features"]["resize"]
    del info["train_image_sha256"]  # written since checksums, with them
    (old / "model.json").write_text(json.dumps(info))
    (old / "checksums.json").unlink()  # such old models were saved without checksums too
    loaded = load_model(old)
    assert loaded.cfg.features.resize == "stretch"
    assert loaded.extractor.transform.resize == "stretch"


def test_evaluate_with_pad_on_variable_aspect_real_images(tmp_path, shared_data):
    """Magnetic-tile crops vary in aspect ratio (about 0.4 to 2.5); "pad" must evaluate them,
    pixel AUROC over the image pixels only."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.evaluation.evaluate import evaluate

    src = shared_data / "magnetic_tile" / "magnetic_tile"
    dst = tmp_path / "mt"
    for group, n in (("train/good", 10), ("test/good", 3)):
        link_subset(src / group, dst / group, n, "*.jpg")
    for p in link_subset(src / "test" / "blowhole", dst / "test" / "blowhole", 3, "*.jpg"):
        link_subset(src / "ground_truth" / "blowhole", dst / "ground_truth" / "blowhole", 1,
                    f"{p.stem}_mask.png")
    cfg = ModelConfig()
    cfg.features.image_size, cfg.features.resize = 96, "pad"
    result = evaluate(load_mvtec(tmp_path, "mt"), cfg, progress=False)
    assert result.n_train == 10 and result.n_test == 6
    assert 0.0 <= result.image_auroc <= 1.0 and 0.0 <= result.pixel_auroc <= 1.0
    assert result.config["features"]["resize"] == "pad"
    # the bank holds image patches only: fewer than all 12 x 12 cells of 10 images at 10 %
    assert result.memory_bank_items < 0.1 * 10 * 12 * 12


def test_lof_quantile_over_image_patches_only():
    from anomaly_inspect.scorers.lof_filter import lof_keep_mask

    rng = np.random.default_rng(0)
    patches = rng.normal(0, 1, (20, 2, 4, 3)).astype(np.float32)
    valid = np.ones((20, 2, 4), bool)
    valid[:, :, 3] = False  # a quarter of the patches is padding
    keep = lof_keep_mask(patches, k=6, discard=0.25, valid=valid)
    assert not keep[:, :, 3].any()  # padding is never kept
    # 25 % of the 120 image patches are dropped (not 25 % of all 160, padding included)
    assert keep.sum() == 90
    assert lof_keep_mask(patches, discard=0.0, valid=valid).sum() == 120


def test_view_masks_follow_the_rotation():
    import torch

    from anomaly_inspect.features.views import cells_inside, content_masks, rotated_views

    boxes = [Box(0, 0, 16, 8), Box(0, 0, 16, 16)]  # left half on content; no padding
    masks = content_masks(boxes, 16)
    assert masks.shape == (2, 1, 16, 16) and masks[0, 0, :, :8].all() and not masks[0, 0, :, 8:].any()
    assert content_masks([Box(0, 0, 16, 16)], 16) is None
    views = list(rotated_views(masks, "rotflip"))  # first view: horizontal flip, no rotation
    valid = cells_inside(views[0], (4, 4))
    assert valid[0, :, 2:].all() and not valid[0, :, :2].any() and valid[1].all()
    assert cells_inside(torch.ones(1, 1, 16, 16), (2, 2)).all()


def test_tailedcore_leaves_padding_out_of_view_memory():
    from anomaly_inspect.scorers.tailedcore import TailedCore

    views = _features_with_padding(77.0, n=4)
    flat = TailedCore._flat_views(views, 2)
    assert flat.shape == (4 * 2 * 3, 2) and np.abs(flat).max() < 1.0


def test_the_feature_source_takes_the_resize_mode_from_the_config():
    """Every workflow builds its extractor with ``pipeline.build_extractor``."""
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.pipeline import build_extractor
    from anomaly_inspect.scorers.tailedcore import TailedCore

    class FakeBackbone:
        def transform_config(self, size, crop, resize, max_pixels):
            return (size, crop, resize)

    cfg = ModelConfig()
    cfg.features.resize = "pad"
    ex = build_extractor(cfg, FakeBackbone(), TailedCore, outputs=("blocks",))
    assert ex.transform == (cfg.features.image_size, cfg.features.crop_size, "pad")
    assert (ex.want_patches, ex.want_pooled, ex.want_blocks) == (True, True, True)


def test_bad_resize_in_yaml_names_the_file(tmp_path):
    from anomaly_inspect.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text("features: {resize: squash}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: features: resize must be one of"):
        load_config(path)
