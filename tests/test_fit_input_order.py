"""The order the training images are listed in does not change the model: the same images
and seed give the same calibration split, memory bank, threshold and scores whether they
come as a list or its reverse, as two folders in either order (API, CLI, a distributed fit's
driver, ``evaluate``'s folder dataset). The one order is a folder's listing order, so a
single folder's model is what it was."""

from __future__ import annotations

import json

import numpy as np

from anomaly_inspect.cli import main
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import list_images, listing_order
from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.screening import fit
from anomaly_inspect.screening.distributed_fit import fit_on_engine
from anomaly_inspect.screening.model import fit_split, input_images
from layout_writer import rgb_image, write_image
from layout_writer import small_config as _small_config

TINY_FIT = ["--image-size", "64", "--runtime", "torch", "--quiet"]


def _line(folder, n: int, first_seed: int) -> list:
    """``n`` small distinct images in ``folder``, in listing order."""
    for i in range(n):
        write_image(folder / f"{i:02d}.png", rgb_image(40, seed=first_seed + i))
    return list_images(folder)


def _same_model(a, b) -> None:
    assert a.info.train_images == b.info.train_images
    assert a.info.calibration_images == b.info.calibration_images
    assert a.threshold == b.threshold
    np.testing.assert_array_equal(a.scorer.memory_bank, b.scorer.memory_bank)


def test_api_fit_on_a_list_and_its_reverse_is_one_model(tmp_path):
    train = _line(tmp_path / "a", 6, 0) + _line(tmp_path / "b", 6, 100)
    cfg = _small_config()
    forward, backward = fit(train, cfg, progress=False), fit(train[::-1], cfg, progress=False)
    _same_model(forward, backward)
    probe = _line(tmp_path / "probe", 3, 500)
    assert [r.score for r in forward.score(probe)] == [r.score for r in backward.score(probe)]
    # explicit calibration images, also listed in reverse: the same model
    given = fit(train[:8], cfg, calibration=train[8:], progress=False)
    _same_model(given, fit(train[7::-1], cfg, calibration=train[:7:-1], progress=False))


def test_fit_split_as_fit_auto_draws_it_is_one_in_either_order(tmp_path):
    """``fit --auto`` tunes on fit_split's fit part: the one the fit then draws; the
    unreadable images it skips are named in one order too."""
    train = _line(tmp_path / "a", 6, 0) + _line(tmp_path / "b", 6, 100)
    for bad in (tmp_path / "a" / "zz.png", tmp_path / "b" / "00b.png"):
        bad.write_bytes(b"not an image")
        train.append(bad)
    forward = fit_split(train, None, 0.25, 3)
    assert fit_split(train[::-1], None, 0.25, 3) == forward
    assert len(forward[3]) == 2 and len(forward[1]) == 3


def test_a_single_folder_keeps_its_listing_order(tmp_path):
    """The one order is a folder's listing (paths compared part by part: ``a/z.png`` before
    ``a-b/a.png`` before ``a.png``, which a plain string sort reverses), so a single folder's
    split is unchanged."""
    for name in ("a/z.png", "a-b/a.png", "a/b/c.png", "B.png", "a.png"):
        write_image(tmp_path / "train" / name, rgb_image(40, seed=len(name)))
    listed = input_images([tmp_path / "train"], twins="once")
    assert [p.relative_to(tmp_path / "train").as_posix() for p in listed] == \
        ["B.png", "a/b/c.png", "a/z.png", "a-b/a.png", "a.png"]
    assert listing_order(reversed(listed)) == listed


def test_cli_fit_on_two_folders_in_either_order_is_one_model(tmp_path):
    a, b = tmp_path / "lineA", tmp_path / "lineB"
    _line(a, 5, 0)
    _line(b, 5, 100)
    models = []
    for name, first, second in (("ab", a, b), ("ba", b, a)):
        out = tmp_path / name
        assert main(["fit", "--train", str(first), "--train", str(second), "--out", str(out),
                     *TINY_FIT]) == 0
        info = json.loads((out / "model.json").read_text())
        info.pop("created")
        models.append(info)
    assert models[0] == models[1]
    assert len(models[0]["calibration_images"]) == 2


def test_distributed_fit_driver_draws_the_local_split_in_either_order(tmp_path):
    """fit_on_engine (the Ray fit's driver, here through the in-process engine) holds out the
    images a local fit holds out, whatever the order it is handed them in."""
    train = _line(tmp_path / "a", 5, 0) + _line(tmp_path / "b", 5, 100)
    cfg = _small_config()
    local = fit(train[::-1], cfg, progress=False)
    remote = [fit_on_engine(paths, cfg, LocalEngine(), None, 0.01, 0.2, False, 10**8)
              for paths in (train, train[::-1])]
    _same_model(*remote)
    assert remote[0].info.calibration_images == local.info.calibration_images
    assert remote[0].info.train_images == local.info.train_images


def test_folder_dataset_lists_its_training_images_in_one_order(tmp_path):
    a, b = _line(tmp_path / "lineA", 3, 0), _line(tmp_path / "lineB", 3, 100)
    test = _line(tmp_path / "test_good", 2, 200)
    ab = load_folders([tmp_path / "lineA", tmp_path / "lineB"], tmp_path / "test_good")
    ba = load_folders([tmp_path / "lineB", tmp_path / "lineA"], tmp_path / "test_good")
    assert [s.path for s in ab.train] == [s.path for s in ba.train] == listing_order(a + b)
    assert [s.path for s in load_folders(tmp_path / "lineB").train] == b  # as listed
    assert [s.path for s in ab.test] == test
