"""``features: crop_size`` (a centre crop of the resized image is the backbone's input):
evaluate's pixel AUROC is over the crop (the published protocol) and a second figure covers every
pixel of the image's content, those outside the crop scored below every pixel the model saw (a
defect there is a miss), with how many defect pixels lie outside; the screen
report's thumbnail shows the whole image, as its overlay does. Without a crop both are as
before."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.transforms import TransformConfig, build_transform
from anomaly_inspect.evaluation import evaluate as ev
from anomaly_inspect.evaluation.metrics import aupro
from layout_writer import rgb_image, write_image


@pytest.mark.parametrize("resize", ["stretch", "pad"])
@pytest.mark.parametrize("hw", [(37, 91), (91, 37), (64, 64), (65, 33)])
def test_the_uncropped_mask_crops_to_the_loaders_mask(resize, hw):
    """The mask before the crop (evaluate reads it again) is the one whose centre crop the
    transform returns, also for a mask larger than its (reduced-decode) image."""
    rng = np.random.default_rng(hw[0])
    cfg = TransformConfig(image_size=65, crop_size=40, resize=resize)
    transform = build_transform(cfg)
    off, c = cfg.crop_offset, cfg.crop_size
    for shape in (hw, (2 * hw[0], 2 * hw[1])):
        mask = (rng.random(shape) > 0.7).astype(np.uint8)
        _, cropped, _ = transform(rgb_image(max(hw))[:hw[0], :hw[1]], mask)
        full = transform.uncropped_mask(mask, *hw)
        assert full.shape == (65, 65)
        np.testing.assert_array_equal(full[off:off + c, off:off + c], cropped)


def _cfg(resize: str, crop: int | None) -> ModelConfig:
    """A small, fast PatchCore config (random weights, torch, 64 px, ``crop`` px crop)."""
    cfg = ModelConfig()
    cfg.backbone.weights, cfg.backbone.runtime = "random", "torch"
    cfg.features.image_size, cfg.features.resize, cfg.features.crop_size = 64, resize, crop
    return cfg


def _category(root, h: int, w: int, defects: list[tuple[slice, slice]]):
    """An MVTec-layout category of ``h`` x ``w`` images: 3 train, 2 good test, and one
    anomalous test image per ``defects`` entry (its mask's rows, columns)."""
    cat = root / "part"
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i}.png", rgb_image(max(h, w), seed=i)[:h, :w])
    for i in range(2):
        write_image(cat / "test" / "good" / f"{i}.png", rgb_image(max(h, w), seed=10 + i)[:h, :w])
    for i, (rows, cols) in enumerate(defects):
        write_image(cat / "test" / "dent" / f"{i}.png", rgb_image(max(h, w), seed=20 + i)[:h, :w])
        mask = np.zeros((h, w), np.uint8)
        mask[rows, cols] = 255
        write_image(cat / "ground_truth" / "dent" / f"{i}_mask.png", mask)
    return cat


@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_pixel_auroc_scores_the_pixels_outside_the_crop_as_the_lowest(tmp_path, monkeypatch,
                                                                     resize):
    """64 px inputs, a 32 px centre crop (rows and columns 16..47 of the resized image). One
    defect lies in the top-left corner, outside the crop, one inside it where the map is high:
    the whole-image pixel AUROC is that of every content pixel (padding left out) with the
    unseen ones ranked below all others, as computed here by hand; the pixel AUROC itself stays
    over the crop (the published protocol: 0.9996 on the reviewer's set with 40 % of the defect
    pixels outside, which only the whole-image figure and the count show)."""
    h, w = (64, 64) if resize == "stretch" else (32, 64)  # pad: content in rows 16..47
    top = 0 if resize == "stretch" else 16
    # resized rows / columns 24..31: the crop's 8..15
    corner, centre = (slice(0, 8), slice(0, 8)), (slice(24 - top, 32 - top), slice(24, 32))
    cat = _category(tmp_path, h, w, [corner, centre])
    crop_map = np.tile(np.arange(32, dtype=np.float32) / 32, (32, 1))  # a column ramp, 0..1
    crop_map[8:16, 8:16] = 5.0  # high on the centre defect

    def fake_maps(patch_scores, size):
        assert tuple(size) == (32, 32)
        return np.stack([crop_map] * len(patch_scores))

    monkeypatch.setattr(ev, "anomaly_maps", fake_maps)
    result = ev.evaluate(load_mvtec(cat), _cfg(resize, 32), progress=False)
    full = np.full((64, 64), -1e9, np.float32)  # unseen: below everything
    full[16:48, 16:48] = crop_map
    content = full[top:top + h]  # the image's rows of the resized square (pad: not padding)
    labels = []
    for defect in [None, None, corner, centre]:  # the good images first, as the test split
        m = np.zeros((h, w), bool)
        if defect is not None:
            m[defect] = True
        labels.append(m.ravel())
    expected = roc_auc_score(np.concatenate(labels), np.tile(content.ravel(), 4))
    assert result.pixel_auroc_whole_image == pytest.approx(expected, abs=1e-9)
    assert result.crop_size == 32
    assert result.anomalous_pixels_outside_crop == {"anomalous": 64, "of": 128}
    assert result.pixel_auroc_whole_image < 0.9  # the corner defect is a miss
    # the crop's pixels (resized rows / columns 16..47) in the content's rows
    in_crop = [lbl.reshape(h, w)[16 - top:48 - top, 16:48].ravel() for lbl in labels]
    assert result.pixel_auroc == pytest.approx(
        roc_auc_score(np.concatenate(in_crop), np.tile(crop_map.ravel(), 4)), abs=1e-9)
    # AUPRO likewise: over the crop only the centre defect is a region (its pixels score 5 in
    # every image, so the curve climbs to PRO 1 at FPR 192 / 4032, area 1 - 0.0476 / 0.6);
    # over the whole image the corner defect is a region that is missed
    crop_masks = [m.reshape(32, 32) for m in in_crop]
    assert result.pixel_aupro == pytest.approx(aupro(crop_masks, [crop_map] * 4), abs=1e-12)
    assert result.pixel_aupro == pytest.approx(1 - 192 / 4032 / 0.6, abs=1e-12)
    masks = [lbl.reshape(h, w) for lbl in labels]
    assert result.pixel_aupro_whole_image == pytest.approx(aupro(masks, [content] * 4), abs=1e-12)
    assert result.pixel_aupro_whole_image < 0.75


def test_without_a_crop_the_map_covers_the_input_and_no_crop_is_recorded(tmp_path, monkeypatch):
    """No crop: the map covers the whole input, nothing is unseen or recorded as such."""
    cat = _category(tmp_path, 64, 64, [(slice(0, 8), slice(0, 8))])
    ramp = np.tile(np.arange(64, dtype=np.float32) / 64, (64, 1))
    monkeypatch.setattr(ev, "anomaly_maps",
                        lambda patch_scores, size: np.stack([ramp] * len(patch_scores)))
    result = ev.evaluate(load_mvtec(cat), _cfg("stretch", None), progress=False)
    mask = np.zeros((64, 64), bool)
    mask[:8, :8] = True
    labels = np.concatenate([np.zeros(2 * 64 * 64, bool), mask.ravel()])
    assert result.pixel_auroc == pytest.approx(roc_auc_score(labels, np.tile(ramp.ravel(), 3)),
                                               abs=1e-9)
    assert result.crop_size is None and result.anomalous_pixels_outside_crop is None
    assert result.pixel_auroc_whole_image is None and result.pixel_aupro_whole_image is None


def test_score_unseen_ranks_them_below_every_seen_pixel():
    maps = [np.array([0.5, np.nan, 2.0], np.float32), np.array([np.nan, 0.25], np.float32)]
    ev.score_unseen(maps)
    unseen = maps[0][1]
    assert unseen == maps[1][0] and unseen < 0.25 and np.isfinite(unseen)
    assert maps[0][0] == 0.5 and maps[1][1] == 0.25


def test_the_table_names_the_crop_and_the_defect_pixels_outside_it(capsys):
    from anomaly_inspect.commands.evaluate import print_result
    from anomaly_inspect.evaluation.evaluate import EvaluationResult

    fields = dict(category="c", method="patchcore", backbone="b", weights="random", image_size=320,
                  image_auroc=0.75, pixel_auroc=0.9996, image_auroc_by_defect={}, n_train=6,
                  n_test=5, n_test_anomalous=2, fit_seconds=1.0, test_seconds=1.0,
                  test_images_per_second=5.0, images_per_second=5.5, memory_bank_items=None,
                  memory_bank_mb=None, search_index=None, peak_rss_mb=100.0, config={})
    print_result(EvaluationResult(**fields, crop_size=256, pixel_auroc_whole_image=0.677,
                                  anomalous_pixels_outside_crop={"anomalous": 40, "of": 100}))
    table = capsys.readouterr().out
    assert "random weights, 320px, 256px centre crop)" in table
    assert ("0.9996 over the 256 px crop; 0.6770 over the whole image, where 40 of 100 anomalous "
            "mask pixels lie outside the crop (scored as the lowest)") in table
    print_result(EvaluationResult(**fields))
    table = capsys.readouterr().out
    assert "random weights, 320px)" in table and "crop" not in table


# -- the screen report's thumbnail -----------------------------------------------------------
def _writer(tmp_path, crop: int | None):
    """A report writer for a 64 px stretch model (``crop`` px centre crop), thumbnails of at
    most 128 px, and the arrays it writes as thumbnails."""
    from anomaly_inspect.screening import runner

    transform = TransformConfig(image_size=64, crop_size=crop, resize="stretch")
    model = SimpleNamespace(extractor=SimpleNamespace(transform=transform),
                            info=SimpleNamespace(display=None), threshold=1.0)
    out = tmp_path / "out"
    out.mkdir()
    return runner._BatchWriter(model, out, out / "results.csv", "none", 128), transform


def _framed(h: int = 48, w: int = 96) -> np.ndarray:
    """Grey with a white 8 px frame: a centre crop of it shows no white."""
    image = np.full((h, w, 3), 90, np.uint8)
    image[:8], image[-8:], image[:, :8], image[:, -8:] = 255, 255, 255, 255
    return image


def _thumbnail(tmp_path, monkeypatch, crop: int | None):
    from anomaly_inspect.screening import runner
    from anomaly_inspect.screening.model import ScoredImage

    written = {}
    real = runner.write_rgb
    monkeypatch.setattr(runner, "write_rgb",
                        lambda path, image: (written.setdefault(path.name, image), real(path, image)))
    src = write_image(tmp_path / "wide.png", _framed())
    writer, transform = _writer(tmp_path, crop)
    model_input, _, _ = build_transform(transform)(_framed())
    try:
        writer.write([ScoredImage(str(src), 0.1, 0.5, False)], {0: model_input})
    finally:
        writer.close()
    (thumb,) = written.values()
    return thumb, model_input


def test_a_cropped_models_thumbnail_shows_the_whole_image(tmp_path, monkeypatch):
    """With a crop the thumbnail was the 32 px centre crop stretched to the file's 1:2: no
    frame, the middle of the part spread over the whole thumbnail. It is the whole image now
    (not upscaled), as the overlay shows it."""
    thumb, _ = _thumbnail(tmp_path, monkeypatch, 32)
    np.testing.assert_array_equal(thumb, _framed())  # 48 x 96 fits within 128: as it is


def test_without_a_crop_the_thumbnail_is_the_model_input_as_before(tmp_path, monkeypatch):
    """No crop: the stretched 64 px model input brought back to the file's 1:2 (64 x 32)."""
    import cv2

    from anomaly_inspect.screening.overlays import denormalise

    thumb, model_input = _thumbnail(tmp_path, monkeypatch, None)
    t = TransformConfig(image_size=64, resize="stretch")
    expected = cv2.resize(denormalise(model_input, t.mean, t.std), (64, 32),
                          interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(thumb, expected)
