"""``evaluate`` and ``tune`` take the ``--max-pixels`` that their pixel-budget error tells the
user to raise (as ``fit`` and ``screen`` do). (PGM / PPM / JPEG 2000 headers over the budget:
test_image_io.py.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly_inspect.cli import main


def _write(path: Path, side: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


@pytest.fixture()
def folder(tmp_path):
    """A folder dataset of 32 x 32 images (1,024 pixels), but one 48 x 48 anomalous test image
    (2,304 pixels)."""
    for i in range(6):
        _write(tmp_path / "train" / f"{i}.png", 32, i)
    for i in range(2):
        _write(tmp_path / "good" / f"{i}.png", 32, 10 + i)
    _write(tmp_path / "bad" / "0.png", 32, 20)
    _write(tmp_path / "bad" / "big.png", 48, 21)
    return ["evaluate", "--dataset", "folder", "--train-dir", str(tmp_path / "train"),
            "--test-normal-dir", str(tmp_path / "good"), "--test-anomalous-dir",
            str(tmp_path / "bad"), "--weights", "random", "--image-size", "32", "--quiet"]


def test_evaluate_refuses_an_image_over_its_max_pixels_and_runs_with_it_raised(
        folder, tmp_path, capsys, monkeypatch):
    assert main([*folder, "--max-pixels", "2000"]) == 1
    err = capsys.readouterr().err
    assert "big.png: image larger than the pixel budget (48x48 = 0.0 MP > 0.002 MP; " \
           "raise --max-pixels to allow it)" in err
    import anomaly_inspect.evaluation.evaluate as ev

    budgets = []
    build = ev.build

    def recording(cfg, **kwargs):  # the extractor reads with the budget the check used
        budgets.append(kwargs.get("max_pixels"))
        return build(cfg, **kwargs)

    monkeypatch.setattr(ev, "build", recording)
    out = tmp_path / "eval.json"
    assert main([*folder, "--max-pixels", "3000", "--output-json", str(out)]) == 0
    assert budgets == [3000] and out.is_file()


def test_evaluate_auto_and_tune_pass_their_max_pixels_to_the_tuning(folder, tmp_path, monkeypatch):
    tuning = importlib.import_module("anomaly_inspect.tuning.tune")  # the module, not the function
    seen = []

    def stop(paths, cfg, settings, cands, **kwargs):
        seen.append(kwargs["max_pixels"])
        raise RuntimeError("stopped after the budget was seen")

    monkeypatch.setattr(tuning, "tune", stop)
    assert main([*folder, "--auto", "--max-pixels", "3000"]) == 1
    assert main(["tune", "--train", str(tmp_path / "train"), "--max-pixels", "1e4", "--quiet"]) == 1
    assert seen == [3000, 10_000]


def test_evaluate_auto_checks_the_dataset_with_its_max_pixels(folder, capsys):
    assert main([*folder, "--auto", "--max-pixels", "2000"]) == 1  # refused before tuning
    assert "big.png: image larger than the pixel budget" in capsys.readouterr().err


def test_tune_skips_images_over_its_max_pixels(tmp_path, capsys):
    for i in range(6):
        _write(tmp_path / "train" / f"{i}.png", 32, i)
    assert main(["tune", "--train", str(tmp_path / "train"), "--max-pixels", "1000",
                 "--tune-cache", str(tmp_path / "cache"), "--quiet"]) == 1
    # the first image over the budget is skipped, and too few are left (1,024 pixels each)
    assert "only 5 left after skipping 1 unreadable" in capsys.readouterr().err
