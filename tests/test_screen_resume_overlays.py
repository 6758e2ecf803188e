"""screen --overlays on a resumed run: a resumed row the run's --overlays asks for that lacks its
overlay gets one (as --maps and --explain complete theirs), its score kept; the calibration
source states how many training images were held out, not only the share asked for."""

from __future__ import annotations

import csv
from dataclasses import replace

import cv2
import pytest

from anomaly_inspect.screening import fit
from anomaly_inspect.screening.model import calibration_split
from anomaly_inspect.screening.runner import overlay_relpath, screen, thumb_relpath
from layout_writer import fit_tiny_model, rgb_image, small_config, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlays")
    model, _ = fit_tiny_model(root)
    inp = root / "inp"
    write_image(inp / "wide.png", rgb_image(40, seed=11)[:30])
    write_image(inp / "square.png", rgb_image(40, seed=12))
    return model, inp


def _rows(out):
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(fh)}


def _screen(model, inputs, out, threshold, **kw):
    """Screen with ``threshold`` in place of the model's (-1: every image flagged)."""
    model.calibration.threshold, saved = threshold, model.calibration.threshold
    try:
        return screen(model, inputs, out, progress=False, report=False, **kw)
    finally:
        model.calibration.threshold = saved


def test_resumed_flagged_rows_without_an_overlay_get_one(tiny, tmp_path):
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp / "wide.png"], out, -1.0, overlays="none")
    first = _rows(out)["wide.png"]
    assert first["decision"] == "anomalous" and first["overlay"] == ""
    s = _screen(model, [inp], out, -1.0, overlays="flagged")  # wide.png resumed, square.png new
    assert (s.n_resumed, s.n_scored) == (1, 1)
    rows = _rows(out)
    for name, row in rows.items():
        assert row["overlay"] == overlay_relpath(row["path"]), name
        assert cv2.imread(str(out / row["overlay"])) is not None, name
        assert (out / thumb_relpath(row["path"], overlay=True)).is_file()
    assert cv2.imread(str(out / rows["wide.png"]["overlay"])).shape[:2] == (30, 40)
    # the resumed row's score and decision stay what the first run wrote
    assert (rows["wide.png"]["score"], rows["wide.png"]["decision"]) == \
        (first["score"], first["decision"])


def test_resumed_normal_rows_get_one_with_all_only(tiny, tmp_path):
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp], out, 1e9, overlays="none")  # nothing flagged
    _screen(model, [inp], out, 1e9, overlays="flagged")
    assert all(r["overlay"] == "" for r in _rows(out).values())
    assert not (out / "overlays").exists()
    s = _screen(model, [inp], out, 1e9, overlays="all")
    assert s.n_resumed == 2
    assert all(r["overlay"] and (out / r["overlay"]).is_file() for r in _rows(out).values())


def test_an_overlay_whose_file_is_gone_is_written_again(tiny, tmp_path):
    model, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp / "square.png"], out, -1.0)
    rel = _rows(out)["square.png"]["overlay"]
    (out / rel).unlink()
    _screen(model, [inp / "square.png"], out, -1.0)
    assert _rows(out)["square.png"]["overlay"] == rel and (out / rel).is_file()


def test_a_model_without_patch_maps_does_not_score_resumed_rows_again(tmp_path, monkeypatch):
    """knn gives image scores only: no overlay can be drawn, so a resumed run (overlays
    flagged by default) scores none of its rows again."""
    for i in range(8):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    model = fit([tmp_path / "train"], replace(small_config(), method="knn"),
                calibration_fraction=0.25, progress=False)
    write_image(tmp_path / "inp" / "a.png", rgb_image(40, seed=21))
    out = tmp_path / "out"
    _screen(model, [tmp_path / "inp"], out, -1.0)
    calls = []
    real = type(model).iter_score
    monkeypatch.setattr(type(model), "iter_score",
                        lambda self, paths, *a, **k: (calls.append(list(paths)),
                                                      real(self, paths, *a, **k))[1])
    s = _screen(model, [tmp_path / "inp"], out, -1.0)
    assert s.n_resumed == 1 and calls == [[]]  # only the (empty) pass over new images
    assert _rows(out)["a.png"]["overlay"] == ""


def test_the_calibration_source_states_how_many_images_were_held_out(tmp_path):
    train = [tmp_path / f"t{i}.png" for i in range(3)]
    _, cal, source = calibration_split(train, None, 0.2, seed=0)
    assert len(cal) == 1  # round(3 * 0.2): 20 % asked, a third held out
    assert source == "held-out 1 of 3 training images (calibration fraction 0.2, seed 0)"
