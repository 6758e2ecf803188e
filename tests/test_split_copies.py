"""Byte-identical copies across a split: ``fit``'s held-out calibration split keeps each set of
copies on one side (a copy in both would score its held-out twin too low, so the threshold too
low), and ``evaluate`` (``check_disjoint``, ``OODData``) warns of a test or OOD image that is a
copy of a training image. Files are hashed only where their sizes agree."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from anomaly_inspect import files
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.isic import OODData
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.screening.calibration import holdout_split
from anomaly_inspect.screening.model import calibration_split, fit_split
from layout_writer import rgb_image, write_image

COPY_WARNING = "byte-for-byte copies of"


def _images(folder, n: int, first_seed: int = 0) -> list:
    return [write_image(folder / f"{i:02d}.png", rgb_image(24, seed=first_seed + i))
            for i in range(n)]


def _with_copies(folder, n: int) -> list:
    """``n`` distinct images and a byte copy of each (``NN_copy.png``)."""
    paths = _images(folder, n)
    for p in list(paths):
        paths.append(shutil.copyfile(p, p.with_name(f"{p.stem}_copy.png")))
    return paths


def _original(path) -> str:
    return path.name.replace("_copy", "")


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_where_every_image_has_a_copy_whole_sets_are_held_out_one_image_calibrating(tmp_path, seed):
    paths = _with_copies(tmp_path, 10)
    fit_part, cal, source, skipped = fit_split(paths, None, 0.2, seed)
    assert not skipped
    held = {_original(p) for p in cal}
    assert len(cal) == len(held) == 2  # 2 of the 10 sets, each one distinct calibration image
    assert not held & {_original(p) for p in fit_part} and len(fit_part) == 16
    assert source == (f"held-out 2 of 20 training images (calibration fraction 0.2, seed {seed}; "
                      f"every image has a byte-identical copy: 2 sets held out, one image of "
                      f"each calibrating, 2 copies left out of both sides)")
    assert calibration_split(list(reversed(paths)), None, 0.2, seed)[:2] == (fit_part, cal)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_hold_out_is_drawn_from_the_images_without_a_copy(tmp_path, seed):
    """40 distinct images and 60 copies of one frame (a review's case: drawn over the sets, one
    seed held out 67 of 100, the frame never fitted and counted 60 times in calibration)."""
    paths = _images(tmp_path, 41)
    frame = paths.pop()
    paths += [shutil.copyfile(frame, tmp_path / f"frame_{k:02d}.png") for k in range(60)]
    fit_part, cal, source = calibration_split(paths, None, 0.2, seed)
    assert len(cal) == 20 and not any(p.name.startswith("frame") for p in cal)
    assert sum(p.name.startswith("frame") for p in fit_part) == 60 and len(fit_part) == 80
    assert source.endswith("drawn from the 40 without a byte-identical copy; the 60 copied images "
                           "are fitted on)")


@pytest.mark.parametrize(("n", "fraction"), [(7, 0.2), (12, 0.3), (25, 0.2), (9, 0.5)])
def test_without_copies_the_split_is_the_plain_seeded_one(tmp_path, n, fraction):
    """No copies: the same images and seed hold out the same images as before copies were
    grouped (the plain ``holdout_split`` of the listing order)."""
    paths = _images(tmp_path, n)
    for seed in range(4):
        fit_idx, cal_idx = holdout_split(n, fraction, seed)
        fit_part, cal, source = calibration_split(paths, None, fraction, seed)
        assert (fit_part, cal) == ([paths[i] for i in fit_idx], [paths[i] for i in cal_idx])
        assert source == (f"held-out {len(cal_idx)} of {n} training images (calibration "
                          f"fraction {fraction:g}, seed {seed})")


def test_too_few_distinct_images_to_hold_out_one_says_why(tmp_path):
    a = write_image(tmp_path / "a.png", rgb_image(24, seed=0))
    b = shutil.copyfile(a, tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"of 1 training images .*; the 2 training images are "
                                         r"1 distinct ones and byte-identical copies of them"):
        fit_split([a, b], None, 0.5, 0)


def test_only_files_whose_sizes_agree_are_hashed(tmp_path, monkeypatch):
    calls = []
    real = files.file_sha256
    monkeypatch.setattr(files, "file_sha256", lambda p: calls.append(p) or real(p))
    sizes = [10, 11, 12, 12, 13, 13, 13]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(bytes([i == 6]) * size)  # 2 = 3 and 4 = 5; 6 differs
    assert files.same_bytes(paths) == [[2, 3], [4, 5]]
    assert sorted(p.name for p in map(type(tmp_path), calls)) == [f"{i}.bin" for i in range(2, 7)]
    # across two sets: only sizes on both sides; pairs (these index, first of those)
    calls.clear()
    assert files.copies_across([paths[3], paths[5], paths[0]], [paths[1], paths[4], paths[2]]) \
        == [(0, 2), (1, 1)]
    assert len(calls) == 0  # cached: each file is read once while its size and mtime stay
    assert files.copies_across([tmp_path / "gone.bin"], paths) == []


def _folders(root, test_copies: int):
    train = _images(root / "train", 4)
    _images(root / "good", 2, first_seed=10)
    for p in train[:test_copies]:
        shutil.copyfile(p, root / "good" / f"copy_of_{p.name}")
    _images(root / "bad", 2, first_seed=20)
    return root / "train", root / "good", root / "bad"


def test_evaluate_warns_of_a_test_image_that_copies_a_training_image(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load_folders(*_folders(tmp_path, 2))
    assert len(ds.train) == 4 and len(ds.test) == 6  # a warning, not a refusal
    [msg] = [r.getMessage() for r in caplog.records if COPY_WARNING in r.getMessage()]
    assert msg.startswith("2 test image(s) are byte-for-byte copies of training images")
    assert f"{tmp_path / 'good' / 'copy_of_00.png'} = {tmp_path / 'train' / '00.png'}" in msg


def test_evaluate_is_silent_without_copies(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_folders(*_folders(tmp_path, 0))
    assert not [r for r in caplog.records if COPY_WARNING in r.getMessage()]


def test_ood_data_warns_of_an_id_test_or_ood_image_that_copies_an_id_training_image(
        tmp_path, caplog):
    a, b, c, d = _images(tmp_path, 4)
    a_copy = shutil.copyfile(a, tmp_path / "a_copy.png")
    with caplog.at_level(logging.WARNING):  # c in two OOD splits is one image, and no copy
        OODData("x", [Sample(a), Sample(b)], np.zeros(2, np.int64), [Sample(d)],
                {"o": [Sample(c)], "p": [Sample(c)]})
    assert not [r for r in caplog.records if COPY_WARNING in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        OODData("x", [Sample(a), Sample(b)], np.zeros(2, np.int64), [Sample(d)],
                {"o": [Sample(c), Sample(a_copy)], "p": [Sample(a_copy)]})
    [msg] = [r.getMessage() for r in caplog.records if COPY_WARNING in r.getMessage()]
    assert msg.startswith("1 ID test / OOD image(s) are byte-for-byte copies of ID training "
                          "images")
    assert f"{a_copy} = {a}" in msg
