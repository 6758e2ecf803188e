"""Refusals of evaluate-lt and demo before any work: a method or defect named twice, a step
k that keeps a whole tail class, a missing weights file; manifest names of distinct noise
ratios; what an interrupted ``demo --keep`` leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.longtail import build_longtail, manifest_name
from anomaly_inspect.data.synthetic import generate_dataset
from layout_writer import fake_datasets

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-train", "4", "--n-test-good", "2", "--n-test-per-defect", "1",
        "--data-size", "64", "--image-size", "64", "--quiet"]


def _fake_layout(root: Path, n_train: int = 30) -> Path:
    """Empty files in an MVTec layout (enough for the split; never read as images)."""
    for c in ("x", "y", "z"):
        for sub, n in (("train/good", n_train), ("test/good", 3), ("test/crack", 10)):
            (root / c / sub).mkdir(parents=True)
            for i in range(n):
                (root / c / sub / f"{i:03d}.png").write_bytes(b"")
    return root


def _no_dataset_read(monkeypatch):
    from anomaly_inspect.data import mvtec

    def listed(*args, **kwargs):
        raise RuntimeError("a dataset was read")

    monkeypatch.setattr(mvtec, "load_mvtec", listed)


# -- 1: a method named twice ------------------------------------------------------------------
def test_check_methods_refuses_a_method_named_twice():
    from anomaly_inspect.evaluation.longtail import check_methods

    with pytest.raises(ValueError, match=r"--methods lists a method twice: patchcore,softpatch,patchcore"):
        check_methods(["patchcore", "softpatch", "patchcore"])


def test_evaluate_longtail_refuses_a_method_named_twice_before_any_work(tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.evaluation.longtail import evaluate_longtail

    ds, dirs = fake_datasets(tmp_path, {"a": (40, 10), "b": (40, 10), "c": (40, 10)})
    split = build_longtail(ds, dirs, "step", k=4, noise=0.1, seed=0)
    # the images do not exist: any work past the method check would fail on them instead
    with pytest.raises(ValueError, match="lists a method twice"):
        evaluate_longtail(split, ds, dirs, ModelConfig(), ["patchcore", "patchcore"], progress=False)


def test_evaluate_lt_refuses_a_method_named_twice_before_reading_data(tmp_path, monkeypatch, capsys):
    _no_dataset_read(monkeypatch)
    root = _fake_layout(tmp_path / "r")
    assert main(["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--methods",
                 "patchcore,patchcore", "--manifest-dir", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "--methods lists a method twice: patchcore,patchcore" in err, err
    assert not (tmp_path / "m").exists()


# -- 2: manifest names of distinct noise ratios --------------------------------------------------
def test_manifest_names_of_distinct_noise_ratios_differ():
    cats = ["a", "b"]
    assert manifest_name("step", 4, 0.1, 0, cats) != manifest_name("step", 4, 0.1000001, 0, cats)
    assert manifest_name("step", 4, 0.1000001, 0, cats) == "lt_step_k4_noise0.1000001_seed0_a-b.json"
    # 1e-7 and 1.00000001e-7 print alike with :g
    assert manifest_name("pareto", None, 1e-7, 0, cats) != manifest_name("pareto", None, 1.00000001e-7, 0, cats)


@pytest.mark.parametrize("noise, text", [(0.1, "0.1"), (0.0, "0"), (0.05, "0.05"), (0.2, "0.2"),
                                         (0.25, "0.25")])
def test_manifest_names_of_usual_ratios_are_unchanged(noise, text):
    assert manifest_name("step", 4, noise, 0, ["b", "a"]) == f"lt_step_k4_noise{text}_seed0_a-b.json"


def test_committed_manifests_keep_their_names():
    committed = sorted((REPO / "datasets").glob("lt_*.json"))
    assert committed
    for path in committed:
        data = json.loads(path.read_text())
        assert manifest_name(data["tail"], data["k"], data["noise"], data["seed"],
                             data["categories"], data["overlap"]) == path.name


# -- 3: a step k that keeps every image of a tail class ----------------------------------------
def test_step_k_at_or_above_a_tail_class_size_is_refused(tmp_path):
    sizes = {"a": (40, 10), "b": (6, 2), "c": (40, 10)}
    ds, dirs = fake_datasets(tmp_path, sizes)
    split = build_longtail(ds, dirs, "step", k=5, noise=0.1, seed=0)  # below every class: fine
    assert all(split.counts[c]["good"] == 5 for c in split.tail_classes)
    tails = split.tail_classes  # the same seed draws the same tail classes for any k
    small = [c for c in tails if sizes[c][0] <= 6]
    assert small == ["b"], tails
    for k in (6, 7):
        with pytest.raises(ValueError, match=rf"step tail: k {k} keeps every one of the 6 training "
                                             rf"images of tail class 'b'"):
            build_longtail(ds, dirs, "step", k=k, noise=0.1, seed=0)


def test_an_older_manifest_whose_k_keeps_a_whole_tail_class_is_refused_naming_it(tmp_path):
    """A manifest without ``sources`` is checked by rebuilding it: a refused rebuild names it."""
    ds, dirs = fake_datasets(tmp_path, {"a": (40, 10), "b": (6, 2), "c": (40, 10)})
    split = build_longtail(ds, dirs, "step", k=5, noise=0.1, seed=0)
    split.k, split.sources = 6, {}
    with pytest.raises(ValueError, match=r"old\.json: this manifest's recipe cannot be rebuilt "
                                         r"\(step tail: k 6 keeps every one"):
        split.check_data(ds, dirs, tmp_path / "old.json")


def test_evaluate_lt_refuses_k_at_a_tail_class_size(tmp_path, capsys):
    root = _fake_layout(tmp_path / "r")
    assert main(["evaluate-lt", "--root", str(root), "--categories", "x,y,z", "--k", "30",
                 "--methods", "patchcore", "--manifest-dir", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "k 30 keeps every one of the 30 training images of tail class" in err, err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


# -- 4: a defect named twice -----------------------------------------------------------------
def test_demo_refuses_a_defect_named_twice(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *TINY, "--defects", "scratch,hole,scratch", "--out", "d"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --defects: lists a defect type twice: 'scratch,hole,scratch'" in err, err
    assert list(tmp_path.iterdir()) == []


def test_generate_dataset_refuses_a_defect_named_twice(tmp_path):
    with pytest.raises(ValueError, match=r"defects \['scratch', 'scratch'\] name a defect type twice"):
        generate_dataset(tmp_path, defects=["scratch", "scratch"], n_train=1, n_test_good=1,
                         n_test_per_defect=1, image_size=64)
    assert list(tmp_path.iterdir()) == []


# -- 5: the weights file checked before the dataset is written ---------------------------------
@pytest.mark.parametrize("folder", [False, True])
def test_demo_checks_the_weights_file_before_writing_the_dataset(tmp_path, monkeypatch, capsys,
                                                                 folder):
    import anomaly_inspect.data.synthetic as synthetic

    def generated(*args, **kwargs):
        raise RuntimeError("the dataset was generated")

    monkeypatch.setattr(synthetic, "generate_dataset", generated)
    weights = tmp_path / "w.pth"
    if folder:
        weights.mkdir()
    out = tmp_path / "d"
    assert main(["demo", *TINY, "--out", str(out), "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "the dataset was generated" not in err, err
    assert (f"{weights}: is a folder" if folder else f"{weights}: weights file not found") in err, err
    assert not out.exists()


# -- 6: demo --keep interrupted before the dataset was written ----------------------------------
def test_demo_keep_interrupted_during_generation_leaves_and_names_nothing(tmp_path, monkeypatch,
                                                                          capsys):
    import anomaly_inspect.data.synthetic as synthetic

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(synthetic, "render_sample", interrupted)
    assert main(["demo", *TINY, "--defects", "hole", "--keep"]) == 130
    err = capsys.readouterr().err
    assert "dataset folder kept" not in err and "interrupted" in err, err
    assert list(tmp_path.iterdir()) == []
