"""AUPRO (area under the per-region-overlap curve to 30 % FPR): hand-checked cases, the MVTec
AD reference algorithm as an oracle on random cases with ties, and evaluate's use of it."""

from __future__ import annotations

from bisect import bisect

import numpy as np
import pytest
from scipy import ndimage

from anomaly_inspect.config import BackboneConfig, FeatureConfig, ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.evaluation import evaluate as ev
from anomaly_inspect.evaluation.metrics import aupro
from layout_writer import rgb_image, write_image


def _cfg(**features) -> ModelConfig:
    """The small evaluate config of these tests: random weights, torch, ``features``."""
    return ModelConfig(backbone=BackboneConfig(weights="random", runtime="torch"),
                       features=FeatureConfig(**features))


def _two_regions():
    """A 2 x 3 image: region R1 = (0, 0) alone, region R2 = (0, 2) and (1, 2) (not touching
    R1, even diagonally), normal pixels (0, 1), (1, 0), (1, 1)."""
    mask = np.array([[1, 0, 1],
                     [0, 0, 1]], np.uint8)
    amap = np.array([[0.9, 0.5, 0.8],
                     [0.2, 0.0, 0.1]], np.float32)
    return mask, amap


def test_hand_checked_curve():
    """Thresholds 0.9, 0.8: PRO (1 + 0) / 2 then (1 + 1/2) / 2 = 0.75 at FPR 0; 0.5 and 0.2:
    FPR 1/3, 2/3 at PRO 0.75; 0.1: PRO 1 at FPR 2/3; 0.0: FPR 1. To FPR 1 the area is
    0.75 * 2/3 + 1 * 1/3 = 5/6; to 0.3 or 0.5 it is 0.75 times the limit."""
    mask, amap = _two_regions()
    assert aupro([mask], [amap], 1.0) == pytest.approx(5 / 6, abs=1e-12)
    assert aupro([mask], [amap], 0.3) == pytest.approx(0.75, abs=1e-12)
    assert aupro([mask], [amap]) == pytest.approx(0.75, abs=1e-12)  # 0.3 by default
    assert aupro([mask], [amap], 0.5) == pytest.approx(0.75, abs=1e-12)


def test_a_normal_pixel_tied_with_a_region_pixel_enters_with_it():
    """The normal pixel (0, 1) at 0.8, tied with R2's (0, 2): at 0.8 the curve goes straight from
    (0, 0.5) to (1/3, 0.75); at FPR 0.3 it is at 0.5 + 0.25 * 0.9 = 0.725, so the area to 0.3
    is (0.5 + 0.725) / 2 * 0.3."""
    mask, amap = _two_regions()
    amap[0, 1] = 0.8
    assert aupro([mask], [amap]) == pytest.approx((0.5 + 0.725) / 2, abs=1e-12)


def test_every_region_weighs_the_same_whatever_its_size():
    """A 30-pixel defect found perfectly and a 1-pixel defect scored as the most normal: the
    pixel AUROC is near 1, but PRO never passes 1/2 before the last normal pixel."""
    mask = np.zeros((10, 10), np.uint8)
    mask[:3] = 1  # 30 pixels
    mask[9, 9] = 1
    amap = np.where(mask == 1, 1.0, 0.5).astype(np.float32)
    amap[9, 9] = 0.0
    assert aupro([mask], [amap]) == pytest.approx(0.5, abs=1e-12)


def test_regions_are_8_connected_and_counted_over_all_images():
    """Diagonal neighbours are one region (size 2: each pixel 1/2); a second image's defect is
    a region of its own. Image 1 finds one of its two diagonal pixels, image 2 its whole defect:
    PRO (1/2 + 1) / 2 = 0.75 before any normal pixel."""
    m1 = np.array([[1, 0], [0, 1]], np.uint8)
    a1 = np.array([[1.0, 0.0], [0.0, -1.0]], np.float32)
    m2 = np.array([[0, 0], [1, 0]], np.uint8)
    a2 = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
    # the normal pixels all tie at 0.0: from (0, 0.75) straight to (1, 0.75); then (1, 1)
    assert aupro([m1, m2], [a1, a2], 1.0) == pytest.approx(0.75, abs=1e-12)
    assert aupro([m1, m2], [a1, a2]) == pytest.approx(0.75, abs=1e-12)


def test_a_perfect_map_gives_one_and_a_reversed_map_zero():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:5] = 1
    mask[6, 6] = 1
    amap = mask.astype(np.float32) + np.linspace(0, 0.5, 64, dtype=np.float32).reshape(8, 8)
    assert aupro([mask], [amap]) == pytest.approx(1.0, abs=1e-12)
    assert aupro([mask], [-amap]) == pytest.approx(0.0, abs=1e-12)


def _reference_aupro(maps, masks, limit):
    """MVTec AD's reference evaluation (compute_pro and trapezoid of its evaluation code),
    written out as an independent oracle: every pixel sorted by score, cumulative FPR / PRO
    changes, tie groups merged, (0, 0) and (1, 1) added, the area to ``limit`` interpolated."""
    fp, pr, scores, n_ok, n_regions = [], [], [], 0, 0
    for amap, gt in zip(maps, masks, strict=True):
        labeled, n = ndimage.label(gt, np.ones((3, 3), int))
        n_regions += n
        ok = labeled == 0
        n_ok += ok.sum()
        change = np.zeros(gt.shape)
        for k in range(n):
            region = labeled == k + 1
            change[region] = 1.0 / region.sum()
        fp.append(ok.ravel())
        pr.append(change.ravel())
        scores.append(amap.ravel())
    scores, fp, pr = np.concatenate(scores), np.concatenate(fp), np.concatenate(pr)
    order = np.argsort(scores)[::-1]
    scores, fp, pr = scores[order], fp[order], pr[order]
    fprs, pros = np.cumsum(fp, dtype=np.float64) / n_ok, np.cumsum(pr) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    x = np.concatenate([[0.0], np.minimum(fprs[keep], 1), [1.0]])
    y = np.concatenate([[0.0], np.minimum(pros[keep], 1), [1.0]])
    correction = 0.0
    if limit not in x:
        i = bisect(x, limit)
        y_at = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
        correction = 0.5 * (y_at + y[i - 1]) * (limit - x[i - 1])
    keep = x <= limit
    x, y = x[keep], y[keep]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / limit


def test_equals_the_reference_algorithm_on_random_maps_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(3, 17, 2))
        masks = [(rng.random((h, w)) < rng.choice([0.0, 0.05, 0.3])).astype(np.uint8)
                 for _ in range(int(rng.integers(1, 5)))]
        masks[0][0, 0] = 1
        levels = int(rng.choice([3, 10, 1000]))  # 3 levels: many ties across normal and defect
        maps = [(np.round(rng.random((h, w)) * levels) / levels + 0.3 * m * rng.random())
                .astype(np.float32) for m in masks]
        limit = float(rng.choice([0.3, 0.05, 0.5, 1.0]))
        assert aupro(masks, maps, limit) == pytest.approx(_reference_aupro(maps, masks, limit),
                                                          abs=1e-12)


def test_bad_input_is_refused_with_the_reason():
    mask, amap = _two_regions()
    with pytest.raises(ValueError, match="same 2-D shape"):
        aupro([mask], [amap.ravel()])
    with pytest.raises(ValueError, match="one of each per image"):
        aupro([mask, mask], [amap])
    with pytest.raises(ValueError, match="at least one anomalous region"):
        aupro([np.zeros_like(mask)], [amap])
    with pytest.raises(ValueError, match="NaN or infinite"):
        aupro([mask], [np.full(amap.shape, np.nan, np.float32)])
    with pytest.raises(ValueError, match="0 / 1"):
        aupro([mask * 255], [amap])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro([mask], [amap], 0.0)


def test_evaluate_reports_the_aupro_of_the_image_pixels_and_the_image_fpr(tmp_path, monkeypatch):
    """64 x 32 images padded into a 64 px input: the AUPRO is over the image's pixels (rows
    16..47 of the map), not the padding, the same as aupro() on those pixels by hand; the
    image FPR at 95 % TPR is that of the image scores."""
    h, w = 32, 64
    cat = tmp_path / "wide"
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i}.png", rgb_image(w, seed=i)[:h])
    masks = []
    for i in range(2):
        write_image(cat / "test" / "good" / f"{i}.png", rgb_image(w, seed=10 + i)[:h])
        write_image(cat / "test" / "scratch" / f"{i}.png", rgb_image(w, seed=20 + i)[:h])
        mask = np.zeros((h, w), np.uint8)
        mask[8:16, 40 + 8 * i:56] = 1
        mask[28:, :4] = 1  # a second region in each
        write_image(cat / "ground_truth" / "scratch" / f"{i}_mask.png", mask * 255)
        masks.append(mask)
    ramp = np.tile(np.arange(w, dtype=np.float32) / w, (h, 1))

    def fake_maps(patch_scores, size):
        amap = np.full(size, 10.0, np.float32)
        amap[16:48] = ramp
        return np.stack([amap] * len(patch_scores))

    monkeypatch.setattr(ev, "anomaly_maps", fake_maps)
    result = ev.evaluate(load_mvtec(cat), _cfg(image_size=64, resize="pad"), progress=False)
    none = np.zeros((h, w), np.uint8)
    assert result.pixel_aupro == pytest.approx(aupro([none, none, *masks], [ramp] * 4), abs=1e-12)
    assert 0 < result.pixel_aupro < 1
    assert result.image_fpr_at_tpr95 in (0.0, 0.5, 1.0)  # two test normals


def test_with_every_defect_outside_the_crop_the_whole_image_figures_show_the_miss(
        tmp_path, monkeypatch, caplog, capsys):
    """64 px inputs, a 48 px centre crop (rows / columns 8..55): defects in rows 0..4 are never
    seen. The crop has no defect pixel, so no pixel AUROC or AUPRO over it, said as such (not
    "the masks mark no pixel"); over the whole image the defects score below every seen pixel:
    pixel AUROC and AUPRO as computed here by hand, and all 300 defect pixels counted outside."""
    from anomaly_inspect.commands.evaluate import print_result

    cat = tmp_path / "w"
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i}.png", rgb_image(64, seed=i))
    for i in range(2):
        write_image(cat / "test" / "good" / f"{i}.png", rgb_image(64, seed=10 + i))
    mask = np.zeros((64, 64), np.uint8)
    mask[0:5, 20:50] = 1
    for i in range(2):
        write_image(cat / "test" / "bad" / f"{i}.png", rgb_image(64, seed=20 + i))
        write_image(cat / "ground_truth" / "bad" / f"{i}_mask.png", mask * 255)
    ramp = np.tile(np.arange(48, dtype=np.float32), (48, 1))
    monkeypatch.setattr(ev, "anomaly_maps",
                        lambda patch_scores, size: np.stack([ramp] * len(patch_scores)))
    cfg = _cfg(image_size=64, crop_size=48)
    result = ev.evaluate(load_mvtec(tmp_path, "w"), cfg, progress=False)
    assert result.pixel_auroc is None and result.pixel_aupro is None
    assert result.pixel_auroc_note == "the masks mark no pixel anomalous inside the 48 px crop"
    assert caplog.text.count("no pixel AUROC") == 1
    full = np.full((64, 64), -1.0, np.float32)  # unseen: below every seen pixel
    full[8:56, 8:56] = ramp
    none = np.zeros_like(mask)
    labels = np.concatenate([none.ravel(), none.ravel(), mask.ravel(), mask.ravel()]).astype(bool)
    from sklearn.metrics import roc_auc_score

    assert result.pixel_auroc_whole_image == pytest.approx(
        roc_auc_score(labels, np.tile(full.ravel(), 4)), abs=1e-9)
    assert result.pixel_aupro_whole_image == pytest.approx(
        aupro([none, none, mask, mask], [full] * 4), abs=1e-12)
    assert result.pixel_aupro_whole_image == 0.0  # never reached before FPR 0.3
    assert result.anomalous_pixels_outside_crop == {"anomalous": 300, "of": 300}
    print_result(result)
    printed = capsys.readouterr().out
    assert "pixel AUPRO            n/a (to 30 % FPR) over the crop; 0.0000 over the whole image" \
        in printed


def test_masks_with_no_defect_anywhere_are_said_once_without_naming_the_crop(
        tmp_path, monkeypatch, caplog):
    cat = tmp_path / "w"
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i}.png", rgb_image(64, seed=i))
        write_image(cat / "test" / "good" / f"{i}.png", rgb_image(64, seed=10 + i))
    write_image(cat / "test" / "bad" / "0.png", rgb_image(64, seed=20))
    write_image(cat / "ground_truth" / "bad" / "0_mask.png", np.zeros((64, 64), np.uint8))
    cfg = _cfg(image_size=64, crop_size=48)
    result = ev.evaluate(load_mvtec(tmp_path, "w"), cfg, progress=False)
    assert result.pixel_auroc is None and result.pixel_auroc_whole_image is None
    assert result.pixel_auroc_note == "the masks mark no pixel anomalous"
    assert caplog.text.count("no pixel AUROC") == 1
    assert result.anomalous_pixels_outside_crop is None and result.pixel_aupro_whole_image is None
