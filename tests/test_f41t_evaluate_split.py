"""``evaluate`` fits on the training images only, and its pixel AUROC reads the image's pixels
only (never the padding that ``resize: pad`` adds around a non-square image)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.evaluation import evaluate as ev
from layout_writer import rgb_image, write_image, write_mvtec


def _cfg(resize: str = "stretch") -> ModelConfig:
    """A small, fast PatchCore config (random weights, torch, 64 px)."""
    cfg = ModelConfig()
    cfg.backbone.weights, cfg.backbone.runtime = "random", "torch"
    cfg.features.image_size, cfg.features.resize = 64, resize
    return cfg


def test_evaluate_fits_on_the_training_images_only(tmp_path, monkeypatch):
    """The one fit sees exactly ``dataset.train`` (in order), none of the test images, the
    normal ones included."""
    dataset = load_mvtec(write_mvtec(tmp_path, n_train=3, n_good=2))
    fitted = []
    real_fit = ev.Runner.fit

    def recording_fit(self, scorers, paths, *args, **kwargs):
        fitted.append(list(paths))
        return real_fit(self, scorers, paths, *args, **kwargs)

    monkeypatch.setattr(ev.Runner, "fit", recording_fit)
    result = ev.evaluate(dataset, _cfg(), progress=False)
    train, test = [s.path for s in dataset.train], [s.path for s in dataset.test]
    assert fitted == [train] and result.n_train == 3
    assert not set(fitted[0]) & set(test)


def test_pixel_auroc_reads_the_image_pixels_not_the_padding(tmp_path, monkeypatch):
    """64 x 32 images padded to 64 x 64 lie in rows 16..47 of the input. The map is 10 on the
    padding (which is normal) and a column ramp on the image: the pixel AUROC is that of the
    ramp against the masks over the image's pixels alone, as computed here by hand."""
    h, w, box = 32, 64, (8, 16, 40, 56)  # mask rows 8..15, columns 40..55
    cat = tmp_path / "wide"
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i}.png", rgb_image(w, seed=i)[:h])
    for i in range(2):
        write_image(cat / "test" / "good" / f"{i}.png", rgb_image(w, seed=10 + i)[:h])
        write_image(cat / "test" / "scratch" / f"{i}.png", rgb_image(w, seed=20 + i)[:h])
        mask = np.zeros((h, w), np.uint8)
        mask[box[0]:box[1], box[2]:box[3]] = 255
        write_image(cat / "ground_truth" / "scratch" / f"{i}_mask.png", mask)
    ramp = np.tile(np.arange(w, dtype=np.float32) / w, (h, 1))  # the map on the image's pixels

    def fake_maps(patch_scores, size):
        assert tuple(size) == (64, 64)
        amap = np.full(size, 10.0, np.float32)
        amap[16:48] = ramp  # the content box of a 64 x 32 image in a 64 px input
        return np.stack([amap] * len(patch_scores))

    monkeypatch.setattr(ev, "anomaly_maps", fake_maps)
    result = ev.evaluate(load_mvtec(cat), _cfg("pad"), progress=False)
    defect = np.zeros((h, w), bool)
    defect[box[0]:box[1], box[2]:box[3]] = True
    labels = np.concatenate([np.zeros(2 * h * w, bool), defect.ravel(), defect.ravel()])
    expected = roc_auc_score(labels, np.tile(ramp.ravel(), 4))
    assert result.pixel_auroc == pytest.approx(expected, abs=1e-9)
    assert expected > 0.7  # the padding (all normal, at 10) would pull it below 0.5
