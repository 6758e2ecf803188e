"""Fit / screen end to end through the CLI on real MVTec bottle images (subsampled for speed)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import MODEL_FORMAT_VERSION, load_model
from anomaly_inspect.screening.model_dir import write_checksums
from anomaly_inspect.screening.runner import CSV_COLUMNS

pytestmark = pytest.mark.slow

N_TRAIN, N_PER_GROUP = 24, 4


@pytest.fixture(scope="module")
def setup(bottle_subset):
    root = bottle_subset(N_TRAIN, N_PER_GROUP, ("--calibration-fraction", "0.25", "--target-fpr", "0.1"))
    return root, root / "model"


def _rows(out):
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def _screen(model, inputs, out, *extra):
    summary = out.parent / f"{out.name}_summary.json"
    rc = main(["screen", str(model), *map(str, inputs), "--out", str(out), "--output-json",
               str(summary), "--quiet", *extra])
    return rc, json.loads(summary.read_text())


def test_fit_writes_self_describing_model(setup):
    _, model = setup
    info = json.loads((model / "model.json").read_text())
    assert info["format_version"] == MODEL_FORMAT_VERSION and info["toolkit_version"]
    assert {"torch", "timm", "faiss-cpu", "numpy"} <= set(info["libraries"])
    assert info["backbone"]["name"] == "tf_efficientnet_lite0"
    assert len(info["backbone"]["weights"]["checksum"]) == 64
    assert len(info["train_images"]) == 18 and len(info["calibration_images"]) == 6
    assert not set(info["train_images"]) & set(info["calibration_images"])
    cal = info["calibration"]
    assert cal["n_calibration"] == 6 and len(cal["scores"]) == 6
    assert cal["threshold"] == max(cal["scores"])  # k = floor(0.1 * 7) = 0 -> fallback to max
    assert not cal["target_met"] and cal["expected_fpr"] == pytest.approx(1 / 7)
    assert (model / "scorer" / "scorer_state.safetensors").is_file()
    assert not list(model.rglob("*.pkl")) and not list(model.rglob("*.pt"))


def test_screen_csv_overlays_report(setup):
    root, model = setup
    out = root / "results"
    rc, s = _screen(model, [root / "bottle" / "test"], out)
    assert rc == 0 and s["n_scored"] == 2 * N_PER_GROUP and s["n_errors"] == 0
    rows = _rows(out)
    assert len(rows) == 2 * N_PER_GROUP
    thr = json.loads((model / "model.json").read_text())["calibration"]["threshold"]
    for r in rows:
        score, p = float(r["score"]), float(r["p_value"])
        assert 0 < p <= 1 and not r["error"]
        assert r["decision"] == ("anomalous" if score > thr else "normal")
        if r["decision"] == "anomalous":
            overlay = cv2.imread(str(out / r["overlay"]))
            assert overlay is not None and overlay.shape == (256, 256, 3)  # original resolution
        else:
            assert r["overlay"] == ""
    good = [float(r["score"]) for r in rows if "/good/" in r["path"]]
    bad = [float(r["score"]) for r in rows if "/broken_large/" in r["path"]]
    assert np.mean(bad) > np.mean(good)
    assert any(r["decision"] == "anomalous" for r in rows)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<tr class=") == len(rows)
    assert 'id="histogram"' in page and 'id="threshold"' in page
    assert "id='auroc'" in page and 'id="roc"' in page  # MVTec layout -> labels
    assert "6 (held-out 6 of 24 training images" in page  # number of calibration images
    assert "http://" not in page and "https://" not in page  # no network
    assert "data:image/jpeg;base64," in page  # thumbnails inlined


def test_python_api_matches_cli(setup):
    root, model = setup
    good = root / "bottle" / "test" / "good"
    rc, _ = _screen(model, [good], root / "api_vs_cli", "--overlays", "none", "--no-report")
    assert rc == 0
    m = load_model(model)
    scored = m.score([good])
    assert len(scored) == N_PER_GROUP
    rows = {r["path"]: float(r["score"]) for r in _rows(root / "api_vs_cli")}
    for s in scored:
        assert s.score == pytest.approx(rows[os.path.abspath(s.path)], rel=1e-4)
        assert s.decision in ("normal", "anomalous")


def test_an_input_through_a_link_is_one_row_under_its_file_and_a_rerun_resumes_it(setup):
    """Inputs are scheduled under the file they name (links resolved), so a rerun naming the
    targets (or another link) finds those rows, with no repeats."""
    root, model = setup
    good = root / "bottle" / "test" / "good"
    links = sorted(good.glob("*.png"))
    assert all(p.is_symlink() for p in links)
    out = root / "through_links"
    rc, _ = _screen(model, [good], out, "--overlays", "none", "--no-report")
    assert rc == 0 and sorted(r["path"] for r in _rows(out)) == sorted(str(p.resolve()) for p in links)
    rc, summary = _screen(model, [p.resolve() for p in links], out, "--overlays", "none",
                          "--no-report")
    assert rc == 0 and summary["n_resumed"] == len(links) and len(_rows(out)) == len(links)


def test_resume_skips_scored_and_rescore_redoes(setup, capsys):
    root, model = setup
    out = root / "resume"
    inputs = [root / "bottle" / "test" / "*" / "*.png"]  # a glob
    rc, s = _screen(model, inputs, out, "--overlays", "none", "--no-report")
    assert rc == 0 and s["n_scored"] == 8
    rc, s = _screen(model, inputs, out, "--overlays", "none", "--no-report")
    assert rc == 0 and s["n_scored"] == 0 and s["n_resumed"] == 8
    # simulate a run killed mid-write: drop two rows and leave half a line
    lines = (out / "results.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-2]) + lines[-2][:12], encoding="utf-8")
    rc, s = _screen(model, inputs, out, "--overlays", "none", "--no-report")
    assert rc == 0 and s["n_scored"] == 2 and s["n_resumed"] == 6
    rows = _rows(out)
    assert len(rows) == 8 and len({r["path"] for r in rows}) == 8
    # a line cut inside its last field parses as complete but is still re-scored
    text = (out / "results.csv").read_text(encoding="utf-8")
    (out / "results.csv").write_text(text.rstrip("\n")[:-1], encoding="utf-8")
    rc, s = _screen(model, inputs, out, "--overlays", "none", "--no-report")
    assert rc == 0 and s["n_scored"] == 1 and len(_rows(out)) == 8
    rc, s = _screen(model, inputs, out, "--overlays", "none", "--no-report", "--rescore")
    assert rc == 0 and s["n_scored"] == 8 and len(_rows(out)) == 8
    # results written by another model are not silently mixed in
    meta = json.loads((out / "screen.json").read_text())
    (out / "screen.json").write_text(json.dumps({**meta, "model_id": "other"}))
    assert main(["screen", str(model), str(inputs[0]), "--out", str(out), "--quiet"]) == 1
    assert "written by a different model; pass --rescore" in capsys.readouterr().err
    # a damaged or missing screen.json is said to be that, not another model; rows are kept
    before = (out / "results.csv").read_text(encoding="utf-8")
    (out / "screen.json").write_text('{"model_id": "cut off')
    assert main(["screen", str(model), str(inputs[0]), "--out", str(out), "--quiet"]) == 1
    assert "screen.json: damaged (" in capsys.readouterr().err
    (out / "screen.json").unlink()
    assert main(["screen", str(model), str(inputs[0]), "--out", str(out), "--quiet"]) == 1
    assert "screen.json is missing beside it" in capsys.readouterr().err
    assert (out / "results.csv").read_text(encoding="utf-8") == before


def _write_broken_folder(folder, real_png):
    folder.mkdir()
    img = cv2.imread(str(real_png), cv2.IMREAD_COLOR)
    ok, jpg = cv2.imencode(".jpg", img)
    (folder / "truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300) + b"IEND")
    (folder / "notes.png").write_text("this is a text file, not an image")
    (folder / "not_an_image.txt").write_text("ignored in folders: not an image extension")
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "sixteen_bit.png"), img.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "big 1300x700.png"), cv2.resize(img, (1300, 700)))
    cv2.imwrite(str(folder / "tiny.png"), cv2.resize(img, (17, 23)))
    ok, png = cv2.imencode(".png", img)
    (folder / "ünïcødé name ß.png").write_bytes(png.tobytes())
    return {"truncated.jpg", "empty.png", "corrupt.png", "notes.png"}


def test_broken_and_odd_files(setup, shared_data, capsys):
    root, model = setup
    folder = root / "odd files"
    broken = _write_broken_folder(folder, shared_data / "mvtec_ad/bottle/test/good/000.png")
    out = root / "odd results"
    rc, s = _screen(model, [folder], out, "--overlays", "all")
    assert rc == 1  # some images failed: non-zero exit ...
    assert "4 image(s) could not be screened" in capsys.readouterr().err  # ... with a summary
    rows = {os.path.basename(r["path"]): r for r in _rows(out)}
    assert len(rows) == 10 and "not_an_image.txt" not in rows
    for name, r in rows.items():
        if name in broken:
            assert r["decision"] == "error" and r["error"] and r["score"] == ""
        else:
            assert not r["error"] and np.isfinite(float(r["score"])), name
            assert (out / r["overlay"]).is_file()
    assert "truncated" in rows["truncated.jpg"]["error"]
    assert "empty" in rows["empty.png"]["error"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<b id='n-errors'>4</b>" in page and "ünïcødé name ß.png" in page


def test_refusals(setup, tmp_path, capsys):
    root, model = setup
    # overwrite refused before any work
    assert main(["fit", "--train", str(root / "train"), "--out", str(model), "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # backbone checksum mismatch
    copy = tmp_path / "m"
    shutil.copytree(model, copy)
    info = json.loads((copy / "model.json").read_text())
    info["backbone"]["weights"]["checksum"] = "0" * 64
    (copy / "model.json").write_text(json.dumps(info))
    img = root / "bottle" / "test" / "good"
    # an edited model.json no longer matches the checksum recorded at fit
    assert main(["screen", str(copy), str(img), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "model.json: changed or truncated since the model was saved" in capsys.readouterr().err
    write_checksums(copy)  # as if fitted with other weights
    assert main(["screen", str(copy), str(img), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "backbone weights differ" in capsys.readouterr().err
    # a newer model (its checksums match) gets the format version's message, not the checksums'
    info["format_version"] = MODEL_FORMAT_VERSION + 1
    (copy / "model.json").write_text(json.dumps(info))
    write_checksums(copy)
    assert main(["screen", str(copy), str(img), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert f"format version {MODEL_FORMAT_VERSION + 1} is not supported" in capsys.readouterr().err
    # missing input
    assert main(["screen", str(model), str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    # a bad --labels is refused before anything is scored or written
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("path,label\nx.png,maybe\n")
    for spec, message in [(str(tmp_path / "nosuch.csv"), "labels CSV not found"),
                          (str(bad_csv), "label 'maybe' is neither normal (0) nor anomalous (1)")]:
        out = tmp_path / "lab"
        assert main(["screen", str(model), str(root / "train"), "--out", str(out), "--labels",
                     spec, "--quiet"]) == 1
        assert message in capsys.readouterr().err and not out.exists()


def test_report_in_headless_chromium(setup):
    """The report loads without console errors and shows the table and the histogram."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not installed (CI needs the Debian package 'chromium')")
        pytest.skip("headless browser check needs Debian package 'chromium' (not installed)")
    root, model = setup
    out = root / "results"
    if not (out / "report.html").is_file():
        _screen(model, [root / "bottle" / "test"], out)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=3000", "--dump-dom", (out / "report.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console  # the page never logs: any console line is an error
    dom = proc.stdout
    assert 'data-ready="1"' in dom  # the table script ran to the end
    assert dom.count("<tr class=") == 2 * N_PER_GROUP
    assert 'id="histogram"' in dom and dom.count('class="bar"') >= 1


def test_python_api_fit_with_calibration_folder(setup, tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.screening import fit

    root, _ = setup
    cfg = ModelConfig()
    cfg.features.image_size = 128
    model = fit([root / "train"], cfg, calibration=[root / "bottle" / "test" / "good"],
                target_fpr=0.2, progress=False)
    assert len(model.info.train_images) == N_TRAIN  # nothing held out
    cal = model.calibration
    assert cal.n_calibration == N_PER_GROUP and "test/good" in cal.source
    assert cal.rank == 1 and cal.threshold == max(cal.scores)  # floor(0.2 * 5) = 1
    saved = model.save(tmp_path / "m")
    again = load_model(saved)
    assert again.calibration == cal
    a = model.score([root / "bottle" / "test" / "broken_large"])
    b = again.score([root / "bottle" / "test" / "broken_large"])
    assert [x.score for x in a] == pytest.approx([x.score for x in b], rel=1e-5)


def test_reruns_keep_other_inputs_errors_and_skip_earlier_results_folders(setup, tmp_path):
    root, model = setup
    good = sorted((root / "bottle" / "test" / "good").glob("*.png"))
    folder = tmp_path / "in"
    folder.mkdir()
    for p in good[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(b"")
    rc, _ = _screen(model, [folder], folder / "results_v1", "--overlays", "all")
    assert rc == 1 and len(_rows(folder / "results_v1")) == 3
    # a second run into another folder inside the input: results_v1's overlays / thumbs are
    # not new images
    rc, summary = _screen(model, [folder], folder / "results_v2", "--overlays", "all")
    assert summary["n_inputs"] == 3 and len(_rows(folder / "results_v2")) == 3
    # a run over one file keeps the other inputs' error rows (they are not retried here)
    out = folder / "results_v1"
    rc, _ = _screen(model, [folder / good[0].name], out)
    rows = _rows(out)
    assert len(rows) == 3 and sum(bool(r["error"]) for r in rows) == 1
    # what results.csv and screen.json say decides like the model did
    meta = json.loads((out / "screen.json").read_text())
    assert meta["decision"] == "score > threshold" and meta["n_calibration"] > 0
    for r in rows:
        if not r["error"]:
            assert (float(r["score"]) > meta["threshold"]) == (r["decision"] == "anomalous")
