"""How ``fit`` splits the training images: the calibration hold-out (over readable images
only), ``calibration_fraction`` against ``calibration``, and ``fit --auto`` tuning on the fit
part only."""

from __future__ import annotations

import logging
import shutil

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import fit
from anomaly_inspect.screening.calibration import holdout_split
from anomaly_inspect.screening.model import calibration_split, fit_split
from layout_writer import rgb_image, write_image
from layout_writer import small_config as _small_config


def _folder(root, n_good: int, corrupt: set[int] = frozenset()) -> list:
    """``n_good + len(corrupt)`` files named in order; those at the ``corrupt`` positions are
    not images."""
    paths = []
    for i in range(n_good + len(corrupt)):
        p = root / f"{i:02d}.png"
        if i in corrupt:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"not an image %d" % i)  # distinct: copies are held out together
        else:
            write_image(p, rgb_image(40, seed=i))
        paths.append(p)
    return paths


def test_the_split_of_readable_images_is_the_plain_seeded_split(tmp_path):
    paths = _folder(tmp_path, 10)
    for seed in (0, 3):
        fit_part, cal, source, skipped = fit_split(paths, None, 0.3, seed)
        assert (fit_part, cal, source) == calibration_split(paths, None, 0.3, seed)
        assert not skipped
    fit_idx, cal_idx = holdout_split(10, 0.2, seed=0)  # None: the default fraction
    assert fit_split(paths, None, None, 0)[1] == [paths[i] for i in cal_idx]


def _corrupt_where_the_plain_split_calibrates() -> tuple[set[int], set[int]]:
    """Of 8 images, the 4 the plain split holds out (seed 0, half), and 6 unreadable ones among
    which those 4 are (2 good images are left)."""
    cal_idx = set(holdout_split(8, 0.5, seed=0)[1].tolist())
    return cal_idx, cal_idx | set([i for i in range(8) if i not in cal_idx][:2])


def test_the_hold_out_is_drawn_over_readable_images_only(tmp_path, caplog):
    cal_idx, corrupt = _corrupt_where_the_plain_split_calibrates()
    paths = _folder(tmp_path, 8 - len(corrupt), corrupt)
    assert len(corrupt) == 6 and calibration_split(paths, None, 0.5, 0)[1] == \
        [paths[i] for i in sorted(cal_idx)]  # the old split: every calibration image corrupt
    with caplog.at_level("WARNING"):
        fit_part, cal, _, skipped = fit_split(paths, None, 0.5, 0)
    good = [p for i, p in enumerate(paths) if i not in corrupt]
    assert sorted(fit_part + cal) == good and len(cal) == 1 and len(fit_part) == 1
    assert (fit_part, cal) == calibration_split(good, None, 0.5, 0)[:2]
    assert [s["path"] for s in skipped] == [str(paths[i]) for i in sorted(corrupt)]
    assert caplog.text.count("skipping ") == 6


def test_fit_calibrates_on_the_readable_images_among_unreadable_ones(tmp_path):
    _, corrupt = _corrupt_where_the_plain_split_calibrates()
    _folder(tmp_path / "train", 8 - len(corrupt), corrupt)
    model = fit([tmp_path / "train"], _small_config(), calibration_fraction=0.5, progress=False)
    assert len(model.info.calibration_images) == 1
    assert len(model.info.train_images) == 1 and len(model.info.skipped_images) == 6


def test_too_few_readable_images_say_how_many_were_skipped(tmp_path):
    paths = _folder(tmp_path, 1, {1, 2})
    with pytest.raises(ValueError, match=r"of 1 training images .*\(2 unreadable training "
                                         r"images skipped\)"):
        fit_split(paths, None, 0.5, 0)
    with pytest.raises(ValueError, match="none of the 2 training images could be read"):
        fit_split(_folder(tmp_path / "bad", 0, {0, 1}), None, 0.5, 0)


def test_calibration_fraction_with_calibration_images_is_refused(tmp_path, capsys):
    _folder(tmp_path / "train", 4)
    _folder(tmp_path / "cal", 2)
    with pytest.raises(ValueError, match="calibration_fraction applies only without "
                                         "calibration=DIR"):
        fit([tmp_path / "train"], _small_config(), calibration=[tmp_path / "cal"],
            calibration_fraction=0.5, progress=False)
    code = main(["fit", "--train", str(tmp_path / "train"), "--calibration", str(tmp_path / "cal"),
                 "--calibration-fraction", "0.5", "--out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err.startswith("error: --calibration-fraction:") and "--calibration;" in err
    assert not (tmp_path / "m").exists()


def test_fit_auto_tunes_on_the_images_fit_fits_on(tmp_path, monkeypatch, capsys):
    import anomaly_inspect.commands.fit as fit_command

    paths = _folder(tmp_path / "train", 10)
    tuned_on = []

    def tune_stub(train_paths, args, cfg):
        tuned_on.extend(train_paths)
        raise ValueError("stop after the tuning input is known")

    monkeypatch.setattr(fit_command, "run_tune", tune_stub)
    code = main(["fit", "--train", str(tmp_path / "train"), "--out", str(tmp_path / "m"),
                 "--auto", "--calibration-fraction", "0.3", "--seed", "3", "--quiet"])
    assert code == 1 and "stop after" in capsys.readouterr().err
    fit_idx, cal_idx = holdout_split(10, 0.3, seed=3)
    assert tuned_on == [paths[i] for i in fit_idx]  # what fit fits on; no calibration image
    assert not set(tuned_on) & {paths[i] for i in cal_idx}


# Calibration images that are copies of training images are named as such: their scores are
# training scores, so the threshold they give is too low.
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
