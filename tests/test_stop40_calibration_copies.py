"""Calibration images that are copies of training images are named as such: their scores are
training scores, so the threshold they give is too low."""

import logging
import shutil

from anomaly_inspect.screening.model import calibration_split


def _files(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"{i:03d}.png"
        p.write_bytes(bytes([i]) * (100 + i % 3))  # some share a size, none its bytes
        out.append(p)
    return out


def test_copies_of_training_images_in_the_calibration_folder_are_warned_of(tmp_path, caplog):
    train = _files(tmp_path / "train", 6)
    cal = tmp_path / "cal"
    _files(cal, 4, start=10)
    for p in train[:2]:
        shutil.copy(p, cal / f"copy_{p.name}")
    with caplog.at_level(logging.WARNING):
        fit_paths, cal_paths, _ = calibration_split(train, [cal], 0.2, 0)
    assert len(cal_paths) == 6 and fit_paths == train
    assert "2 calibration images are also training images (the same files or copies" in caplog.text


def test_distinct_calibration_images_give_no_warning(tmp_path, caplog):
    train = _files(tmp_path / "train", 6)
    cal = _files(tmp_path / "cal", 4, start=10)  # sizes shared with training files: hashed
    with caplog.at_level(logging.WARNING):
        fit_paths, cal_paths, what = calibration_split(train, [tmp_path / "cal"], 0.2, 0)
    assert fit_paths == train and sorted(cal_paths) == cal
    assert what == f"calibration images from {tmp_path / 'cal'}"
    assert "also training images" not in caplog.text and not caplog.records
