"""screen --maps: each chosen image's anomaly map as maps/*.npy (float32 at the image's own
size, NaN outside a centre crop), named in results.csv's map column, removed by a rescore,
kept on resume; a results.csv of the layout before the column resumes."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import fit
from anomaly_inspect.screening import runner as screen_runner
from anomaly_inspect.screening.overlays import image_map
from anomaly_inspect.screening.runner import CSV_COLUMNS, map_relpath, screen
from layout_writer import fit_tiny_model, rgb_image, small_config, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    model, model_dir = fit_tiny_model(root)
    inp = root / "inp"
    write_image(inp / "wide.png", rgb_image(40, seed=11)[:30])  # 30 x 40: not the input's shape
    write_image(inp / "square.png", rgb_image(40, seed=12))
    return model, model_dir, inp


def _rows(out):
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(fh)}


def _screen(model, inputs, out, **kw):
    return screen(model, inputs, out, progress=False, report=False, overlays="none", **kw)


def test_all_images_get_the_overlays_map_at_their_own_size(tiny, tmp_path):
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp], out, maps="all")
    rows = _rows(out)
    scored = {r.path.rsplit("/", 1)[-1]: r for b in model.iter_score([inp], keep_maps=True)
              for r in b.images}
    for name, shape in (("wide.png", (30, 40)), ("square.png", (40, 40))):
        row, r = rows[name], scored[name]
        assert row["map"] == map_relpath(r.path)
        amap = np.load(out / row["map"])
        assert amap.dtype == np.float32 and amap.shape == shape
        # the map the overlay draws, at the image's size (stretch: every pixel covered)
        want, covered = image_map(r.patch_scores, r.cells, r.grid, model.extractor.transform,
                                  shape, shape)
        assert covered.all() and np.array_equal(amap, want.astype(np.float32))
        # blurred patch scores: positive, and no pixel above the image score (the patch max)
        assert amap.min() > 0 and amap.max() <= r.score * (1 + 1e-6)


def test_none_by_default_and_flagged_only_with_flagged(tiny, tmp_path):
    model, _, inp = tiny
    _screen(model, [inp], tmp_path / "none")
    assert all(r["map"] == "" for r in _rows(tmp_path / "none").values())
    assert not (tmp_path / "none" / "maps").exists()
    # a threshold below every score flags both images; above every score flags none
    for threshold, flagged in ((-1.0, True), (1e9, False)):
        out = tmp_path / f"flagged{threshold}"
        model.calibration.threshold, saved = threshold, model.calibration.threshold
        try:
            _screen(model, [inp], out, maps="flagged")
        finally:
            model.calibration.threshold = saved
        assert all(bool(r["map"]) == flagged and (r["decision"] == "anomalous") == flagged
                   for r in _rows(out).values())


def test_a_large_image_is_scaled_to_map_side(tiny, tmp_path, monkeypatch):
    model, _, inp = tiny
    monkeypatch.setattr(screen_runner, "MAP_SIDE", 20)
    out = tmp_path / "out"
    _screen(model, [inp / "wide.png"], out, maps="all")
    assert np.load(out / _rows(out)["wide.png"]["map"]).shape == (15, 20)


def test_nan_outside_the_centre_crop(tmp_path):
    from dataclasses import replace

    for i in range(8):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    cfg = small_config()
    cfg = replace(cfg, features=replace(cfg.features, crop_size=48))
    model = fit([tmp_path / "train"], cfg, calibration_fraction=0.25, progress=False)
    img = write_image(tmp_path / "inp" / "a.png", rgb_image(64, seed=20))
    out = tmp_path / "out"
    _screen(model, [img], out, maps="all")
    amap = np.load(out / _rows(out)["a.png"]["map"])
    assert amap.shape == (64, 64)
    # the 64 px image is the 64 px input; the 48 px crop leaves an 8 px border
    assert np.isnan(amap[:8]).all() and np.isnan(amap[:, -8:]).all()
    assert np.isfinite(amap[8:56, 8:56]).all()


def test_rescore_removes_the_maps_and_resume_keeps_them(tiny, tmp_path):
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp], out, maps="all")
    files = sorted(p.name for p in (out / "maps").iterdir())
    assert len(files) == 2
    s = _screen(model, [inp], out)  # resumed: nothing scored, the maps and columns stay
    assert s.n_resumed == 2 and sorted(p.name for p in (out / "maps").iterdir()) == files
    assert all(r["map"] for r in _rows(out).values())
    _screen(model, [inp], out, rescore=True)  # started over without maps: the old ones go
    assert list((out / "maps").iterdir()) == []
    assert all(r["map"] == "" for r in _rows(out).values())


def test_results_of_the_layout_before_the_map_column_resume(tiny, tmp_path):
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp], out)
    rows = list(_rows(out).values())
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS[:-1], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    s = _screen(model, [inp], out)
    assert s.n_resumed == 2 and list(_rows(out).values()) == rows


def test_cli_maps_flag(tiny, tmp_path, capsys):
    _, model_dir, inp = tiny
    out = tmp_path / "out"
    assert main(["screen", str(model_dir), str(inp), "--out", str(out), "--maps", "all",
                 "--no-report", "--quiet"]) == 0
    assert len(list((out / "maps").glob("*.npy"))) == 2
    with pytest.raises(SystemExit):
        main(["screen", str(model_dir), str(inp), "--out", str(out), "--maps", "some"])
    assert "invalid choice: 'some'" in capsys.readouterr().err


def test_maps_value_is_checked_before_any_work(tiny, tmp_path):
    model, _, inp = tiny
    with pytest.raises(ValueError, match=r"maps must be one of \('flagged', 'all', 'none'\), got 'yes'"):
        _screen(model, [inp], tmp_path / "out", maps="yes")
    assert not (tmp_path / "out").exists()


def test_no_nan_without_a_crop_on_an_image_larger_than_the_input(tiny, tmp_path):
    """Corner pixels whose centres lie in the model input are covered (a bilinear warp of ones
    thresholded at 0.5 left the corners of images over about 2.4x the input side uncovered)."""
    model, _, _ = tiny
    img = write_image(tmp_path / "big.png", np.kron(rgb_image(40, seed=5), np.ones((5, 5, 1), np.uint8)))
    out = tmp_path / "out"
    _screen(model, [img], out, maps="all")
    amap = np.load(out / _rows(out)["big.png"]["map"])
    assert amap.shape == (200, 200) and np.isfinite(amap).all()


def test_a_resumed_run_writes_the_maps_its_rows_lack(tiny, tmp_path):
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp / "wide.png"], out)  # no maps
    first = _rows(out)["wide.png"]["score"]
    s = _screen(model, [inp], out, maps="all")  # wide.png resumed, square.png new
    assert (s.n_resumed, s.n_scored) == (1, 1)
    rows = _rows(out)
    assert all(r["map"] and (out / r["map"]).is_file() for r in rows.values())
    assert np.load(out / rows["wide.png"]["map"]).shape == (30, 40)
    # the resumed row's score stays what the first run wrote
    assert rows["wide.png"]["score"] == first


def test_a_full_disk_names_the_map_and_its_reason_once(tiny, tmp_path, monkeypatch):
    import errno

    model, _, inp = tiny

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(screen_runner.DiskFullError) as e:
        _screen(model, [inp / "wide.png"], tmp_path / "out", maps="all")
    msg = str(e.value)
    assert "cannot write the anomaly map of" in msg and "(No space left on device)" in msg
    assert msg.count("maps/") == 1 and msg.count("free some space") == 1


def test_a_model_without_patch_maps_says_so_and_resumes(tmp_path, caplog):
    """knn gives image scores only: --maps writes nothing and says why, on a first run and on a
    resumed one (the resumed pass crashed on the missing cells)."""
    import logging
    from dataclasses import replace

    for i in range(8):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    model = fit([tmp_path / "train"], replace(small_config(), method="knn"),
                calibration_fraction=0.25, progress=False)
    inp = tmp_path / "inp"
    write_image(inp / "a.png", rgb_image(40, seed=21))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect"):
        _screen(model, [inp], out, maps="all")
        assert "no anomaly maps written: the model's scorer (knn)" in caplog.text
        caplog.clear()
        write_image(inp / "b.png", rgb_image(40, seed=22))
        s = _screen(model, [inp], out, maps="all")  # a.png resumed, b.png new
        assert (s.n_resumed, s.n_scored) == (1, 1)
        assert "no anomaly maps written" in caplog.text
    assert all(r["map"] == "" for r in _rows(out).values()) and not (out / "maps").exists()


def test_coverage_is_the_exact_pixel_centre_rule():
    """A pixel is covered where its centre lies in the model input, edges included, decided
    exactly (float offsets rounded some centres on a crop's edge out, or in)."""
    from fractions import Fraction

    from anomaly_inspect.data.transforms import Box, TransformConfig

    g = 8
    for t in (TransformConfig(256, crop_size=224), TransformConfig(255, crop_size=224, resize="pad")):
        size, crop = t.output_size, t.crop_offset
        for h, w in ((56, 72), (88, 104), (600, 600), (333, 517)):
            _, covered = image_map(np.ones((g, g), np.float32), Box(0, 0, g, g), (g, g), t,
                                   (h, w), (h, w))
            r = t.resized_box(h, w)

            want = np.outer(*(np.array([0 <= Fraction(2 * k + 1, 2) * Fraction(extent, n) + start - crop
                                        <= size for k in range(n)])
                               for n, extent, start in ((h, r.height, r.top), (w, r.width, r.left))))
            assert np.array_equal(covered, want), (t, h, w)
