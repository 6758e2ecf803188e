"""``fit`` and ``screen`` with a small random-weights model: an earlier screen's outputs are no
training, calibration or tuning images; images that do not decode take no calibration place;
training and calibration skips stay apart; a thumbnail that cannot be written stops nothing."""

from __future__ import annotations

import json

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import fit
from anomaly_inspect.screening.calibration import holdout_split
from anomaly_inspect.screening.runner import read_results, thumb_relpath
from layout_writer import corrupt_data_png, earlier_screen, rgb_image, write_image
from layout_writer import small_config as _small_config

SMALL = ["--weights", "random", "--image-size", "64", "--quiet"]


def _good(folder, n: int, start: int = 0) -> list:
    return [write_image(folder / f"n{i:02d}.png", rgb_image(40, seed=i))
            for i in range(start, start + n)]






def test_fit_trains_and_calibrates_without_an_earlier_screens_outputs(tmp_path):
    _good(tmp_path / "train", 3)
    earlier_screen(tmp_path / "train" / "res")
    model = fit([tmp_path / "train"], _small_config(), progress=False)
    assert len(model.info.train_images) + len(model.info.calibration_images) == 3
    _good(tmp_path / "cal", 2, start=10)
    earlier_screen(tmp_path / "cal" / "res")
    model = fit([tmp_path / "train"], _small_config(), calibration=[tmp_path / "cal"],
                progress=False)
    assert len(model.info.train_images) == 3 and len(model.info.calibration_images) == 2


def test_fit_auto_tunes_without_an_earlier_screens_outputs(tmp_path, monkeypatch, capsys):
    import anomaly_inspect.commands.fit as fit_command

    paths = _good(tmp_path / "train", 10)
    earlier_screen(tmp_path / "train" / "res")
    tuned_on = []

    def tune_stub(train_paths, args, cfg):
        tuned_on.extend(train_paths)
        raise ValueError("stop after the tuning input is known")

    monkeypatch.setattr(fit_command, "run_tune", tune_stub)
    code = main(["fit", "--train", str(tmp_path / "train"), "--out", str(tmp_path / "m"),
                 "--auto", "--quiet"])
    assert code == 1 and "stop after" in capsys.readouterr().err
    assert tuned_on == [paths[i] for i in holdout_split(10, 0.2, 0)[0]]


def test_a_fit_whose_plain_hold_out_does_not_decode_calibrates_on_images_that_do(tmp_path):
    drawn = set(holdout_split(15, 0.2, 12)[1].tolist())  # 9 of 15 do not decode, among them
    corrupt = drawn | set([i for i in range(15) if i not in drawn][:9 - len(drawn)])  # the 3 drawn
    for i in range(15):
        path = tmp_path / "train" / f"{i:02d}.png"
        corrupt_data_png(path, i) if i in corrupt else write_image(path, rgb_image(40, seed=i))
    cfg = _small_config()
    cfg.seed = 12
    model = fit([tmp_path / "train"], cfg, progress=False)  # was: none of the 3 could be read
    bad = {str(tmp_path / "train" / f"{i:02d}.png") for i in corrupt}
    assert model.info.calibration_images and not set(model.info.calibration_images) & bad
    assert model.calibration.n_calibration == len(model.info.calibration_images)
    assert {s["path"] for s in model.info.skipped_images} == bad
    assert {s["role"] for s in model.info.skipped_images} == {"training"}


def test_fit_keeps_unreadable_calibration_images_apart_from_training_ones(tmp_path, capsys):
    _good(tmp_path / "train", 4)
    (tmp_path / "train" / "bad.png").write_bytes(b"not an image")
    _good(tmp_path / "cal", 2, start=10)
    corrupt_data_png(tmp_path / "cal" / "x.png")
    (tmp_path / "cal" / "y.png").write_bytes(b"not an image")
    code = main(["fit", "--train", str(tmp_path / "train"), "--calibration", str(tmp_path / "cal"),
                 "--out", str(tmp_path / "m"), *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    assert "4 (skipped 1 unreadable)" in out
    assert "2 normal images (skipped 2 unreadable), calibration images from" in out
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    roles = {s["path"].rsplit("/", 1)[1]: s["role"] for s in info["skipped_images"]}
    assert roles == {"bad.png": "training", "x.png": "calibration", "y.png": "calibration"}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    _good(root / "train", 5)
    assert main(["fit", "--train", str(root / "train"), "--out", str(root / "m"), *SMALL]) == 0
    return root / "m"


def test_a_thumbnail_that_cannot_be_written_stops_no_screen(small_model, tmp_path, caplog):
    inputs = _good(tmp_path / "in", 3, start=20)
    out = tmp_path / "out"
    (out / thumb_relpath(str(inputs[1].resolve()))).mkdir(parents=True)  # in the thumbnail's way
    with caplog.at_level("WARNING"):
        code = main(["screen", str(small_model), str(tmp_path / "in"), "--out", str(out),
                     "--batch-size", "1", "--quiet"])
    assert code == 0 and (out / "report.html").is_file()
    assert len(read_results(out / "results.csv")[0]) == 3
    assert f"no thumbnail for {inputs[1].resolve()}: cannot write" in caplog.text
