"""``anomaly-inspect demo`` end to end on a tiny generated dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.image_io import read_image, read_mask
from anomaly_inspect.data.synthetic import DEFECTS, render_sample

TINY = ["--n-train", "6", "--n-test-good", "3", "--n-test-per-defect", "2",
        "--data-size", "128", "--image-size", "128", "--quiet"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run kept under --out (the slow part, shared by the tests below); its JSON goes
    into --out too, beside the dataset folder (demo writes only synthetic_<texture>/ there)."""
    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", *TINY, "--out", str(out / "data"), "--output-json", str(out / "data" / "r.json")])
    return code, out


def test_demo_writes_json_with_metrics(demo_run, capsys):
    code, out = demo_run
    assert code == 0
    result = json.loads((out / "data" / "r.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "n_train", "n_test", "fit_seconds", "test_seconds",
                "test_images_per_second", "memory_bank_items", "memory_bank_mb", "peak_rss_mb",
                "backbone", "method", "category"):
        assert key in result, key
    assert result["n_train"] == 6 and result["n_test"] == 3 + 2 * len(DEFECTS)
    assert result["category"] == "synthetic_fabric" and result["method"] == "patchcore"
    assert result["dataset"]["synthetic"] is True
    # Even 6 training images separate these defects; a broken pipeline would sit near 0.5.
    assert result["image_auroc"] >= 0.9
    assert result["pixel_auroc"] is not None and result["pixel_auroc"] >= 0.9


def test_demo_masks_are_exactly_the_defects(demo_run):
    _, out = demo_run
    cat = out / "data" / "synthetic_fabric"
    n_before = 6 + 3
    for j, defect in enumerate(DEFECTS):
        for i in range(2):
            k = n_before + 2 * j + i  # the generator's stream for this file
            twin = render_sample("fabric", defect, (0, k), 128)
            image = read_image(cat / "test" / defect / f"{i:03d}.png")
            mask = read_mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png")
            np.testing.assert_array_equal(image, twin.image)
            changed = (image != twin.clean).any(axis=2)
            np.testing.assert_array_equal(changed, mask.astype(bool))
            assert mask.any()


def test_demo_temporary_folder_is_removed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code = main(["demo", *TINY, "--texture", "metal", "--defects", "hole,crack"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "image AUROC" in printed and "synthetic_metal" in printed
    # nothing left behind without --keep / --out (torch's own cache, made when the demo is the
    # first to export the backbone to ONNX, is torch's, as it is in the real temp folder)
    assert [p for p in tmp_path.iterdir() if not p.name.startswith("torchinductor_")] == []
    code = main(["demo", *TINY, "--texture", "metal", "--defects", "stain", "--keep"])
    assert code == 0
    (kept,) = tmp_path.iterdir()  # --keep: the temporary dataset stays, and its path is printed
    assert str(kept / "synthetic_metal") in capsys.readouterr().out
    assert (kept / "synthetic_metal" / "test" / "stain").is_dir()


def test_demo_refuses_existing_output(demo_run, capsys):
    _, out = demo_run
    code = main(["demo", *TINY, "--out", str(out / "data")])
    assert code == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--keep", "--out", "D"], "error: --keep keeps the temporary dataset folder; a dataset "
                               "written to --out is kept anyway: give one of them"),
    (["--overwrite"], "error: --overwrite replaces a dataset generated earlier under --out; "
                      "without --out there is none"),
])
def test_demo_refuses_flags_that_would_mean_nothing(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *TINY, *flags]) == 1
    assert capsys.readouterr().err.strip() == message
    assert list(tmp_path.iterdir()) == []


def test_demo_keep_names_the_kept_folder_when_the_run_fails(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("anomaly_inspect.evaluation.evaluate.evaluate", fail)
    assert main(["demo", *TINY, "--defects", "hole", "--keep"]) == 1
    (kept,) = tmp_path.iterdir()
    assert capsys.readouterr().err == f"dataset folder kept: {kept}\nerror: boom\n"


def test_demo_writes_its_json_before_printing(tmp_path, monkeypatch):
    class Result:
        def to_dict(self):
            return {"image_auroc": 1.0}

    def closed_pipe(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("anomaly_inspect.evaluation.evaluate.evaluate", lambda *a, **k: Result())
    monkeypatch.setattr("anomaly_inspect.commands.demo.print_result", closed_pipe)
    out = tmp_path / "r.json"
    assert main(["demo", *TINY, "--defects", "hole", "--out", str(tmp_path / "d"),
                 "--output-json", str(out)]) == 1
    assert json.loads(out.read_text())["image_auroc"] == 1.0
