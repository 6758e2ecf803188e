"""tune's cache and messages: a damaged synthetic-anomaly set is drawn again, ``fit --auto``
names its calibration hold-out when too few images are left, and an empty ``--candidates`` list
is refused (the "too few after skipping" wording: tests/test_tune_cli.py)."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.anomalies import MANIFEST, AnomalyRecipe, read_anomalies, write_anomalies
from anomaly_inspect.data.synthetic import generate_dataset, render_sample

TINY = ["--image-size", "64", "--candidates", "lite0-64-8+16-mean-stretch", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return generate_dataset(root, "fabric", "fabric", n_train=12, n_test_good=3, n_test_per_defect=2,
                            image_size=64, seed=0)


def _written_set(tmp_path):
    srcs = []
    for i in range(2):
        p = tmp_path / f"src{i}.png"
        cv2.imwrite(str(p), render_sample("metal", None, i, 96).clean)
        srcs.append(p)
    write_anomalies(srcs, ["cutpaste", "local"], [None, None], tmp_path / "set", AnomalyRecipe())
    return tmp_path / "set"


def test_read_anomalies_refuses_a_damaged_png_naming_it(tmp_path):
    out = _written_set(tmp_path)
    assert len(read_anomalies(out)) == 2
    png = out / "00001_local.png"
    data = png.read_bytes()
    png.write_bytes(data[:100])  # truncated
    with pytest.raises(ValueError, match=r"00001_local\.png: .*bytes"):
        read_anomalies(out)
    png.write_bytes(data[:50] + bytes([data[50] ^ 1]) + data[51:])  # same size, one bit changed
    with pytest.raises(ValueError, match=r"00001_local\.png: .*checksum"):
        read_anomalies(out)
    png.write_bytes(data)
    assert len(read_anomalies(out)) == 2
    (out / "00000_cutpaste_mask.png").unlink()
    with pytest.raises(ValueError, match=r"00000_cutpaste_mask\.png"):
        read_anomalies(out)
    assert read_anomalies(tmp_path / "none") is None  # no set there: a miss, not damage


def test_a_set_written_without_checksums_is_a_plain_miss_not_damage(tmp_path):
    out = _written_set(tmp_path)
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["files"]  # as an older version wrote it: drawn again, without a warning
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert read_anomalies(out) is None
    manifest["files"] = ["not", "a", "mapping"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a synthetic-anomaly manifest"):
        read_anomalies(out)


def test_a_damaged_synthetic_cache_entry_is_drawn_again(demo, tmp_path, caplog, capsys):
    cache = tmp_path / "cache"
    args = ["tune", "--train", str(demo / "train" / "good"), "--tune-cache", str(cache), *TINY]
    assert main([*args, "--output-json", str(tmp_path / "first.json")]) == 0
    (entry,) = (cache / "synthetic").iterdir()
    png = sorted(p for p in entry.glob("00001_*.png") if "mask" not in p.name)[0]
    png.write_bytes(png.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--output-json", str(tmp_path / "second.json")]) == 0
    warned = [r.getMessage() for r in caplog.records if "synthetic-anomaly" in r.getMessage()]
    assert len(warned) == 1 and png.name in warned[0] and "\n" not in warned[0]
    assert read_anomalies(entry) is not None  # drawn again in place
    first, second = (json.loads((tmp_path / f"{n}.json").read_text())["tuning"]["candidates"]
                     for n in ("first", "second"))
    assert [(c["name"], c["fold_auroc"], c["judge_auroc"]) for c in second] == \
        [(c["name"], c["fold_auroc"], c["judge_auroc"]) for c in first]
    capsys.readouterr()


def test_fit_auto_names_the_calibration_hold_out_when_too_few_are_left(demo, tmp_path, capsys):
    seven = tmp_path / "seven"
    seven.mkdir()
    for p in sorted((demo / "train" / "good").glob("*.png"))[:7]:
        shutil.copy(p, seven)
    rc = main(["fit", "--auto", "--train", str(seven), "--calibration-fraction", "0.3",
               "--out", str(tmp_path / "model"), "--tune-cache", str(tmp_path / "cache"), *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err, err
    assert "got 5" in err and "2 of the 7" in err and "held out for calibration" in err
    for option in ("--calibration DIR", "--calibration-fraction", "--folds"):
        assert option in err


@pytest.mark.parametrize("given", ["", " ", ","])
def test_an_empty_candidate_list_is_refused(tmp_path, capsys, given):
    (tmp_path / "empty").mkdir()
    rc = main(["tune", "--train", str(tmp_path / "empty"), "--candidates", given, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and err.startswith("error: --candidates"), err
