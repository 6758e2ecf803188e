"""tune's inputs: a tune cache inside a folder the command reads is refused (its
synthetic anomalies became training images, run after run); ``tune --root/--category`` without
``--judge`` needs only train/good; images too small for synthetic anomalies are recorded apart
from unreadable ones and still fitted on."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.synthetic import generate_dataset

TINY = ["--image-size", "64", "--candidates", "lite0-64-8+16-mean-stretch", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return generate_dataset(root, "fabric", "fabric", n_train=12, n_test_good=3, n_test_per_defect=2,
                            image_size=64, seed=0)


@pytest.fixture
def train(demo, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(demo / "train" / "good", folder)
    return folder


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return err


# 1. a tune cache inside a folder whose images the command reads

def test_a_tune_cache_inside_the_train_folder_is_refused_naming_both(train, capsys):
    cache = train / "cache"
    assert main(["tune", "--train", str(train), "--tune-cache", str(cache), *TINY]) == 1
    err = _err(capsys)
    assert f"--tune-cache {cache}" in err and f"--train folder {train}" in err
    assert "would be read as training images" in err
    assert not cache.exists()  # refused before any work
    # the folder itself, and a link leading into it (compared resolved)
    assert main(["tune", "--train", str(train), "--tune-cache", str(train), *TINY]) == 1
    assert "would be read as training images" in _err(capsys)
    link = train.parent / "link"
    link.symlink_to(train)
    assert main(["tune", "--train", str(train), "--tune-cache", str(link / "c"), *TINY]) == 1
    assert f"--tune-cache {link / 'c'} (= {train / 'c'})" in _err(capsys)


def test_fit_and_evaluate_auto_refuse_it_too_and_a_glob_by_its_fixed_folder(demo, train, tmp_path, capsys):
    cal = tmp_path / "cal"
    shutil.copytree(demo / "train" / "good", cal)
    for command, inside in (
            (["fit", "--auto", "--train", str(train), "--out", str(tmp_path / "m")], train / "c"),
            (["fit", "--auto", "--train", str(train), "--calibration", str(cal), "--out",
              str(tmp_path / "m")], cal / "c"),
            (["tune", "--train", f"{train}/*.png"], train / "c"),
            (["evaluate", "--auto", "--root", str(demo.parent), "--category", demo.name],
             demo / "train" / "good" / "c"),
            (["tune", "--root", str(demo.parent), "--category", demo.name], demo / "train" / "c")):
        assert main([*command, *TINY, "--tune-cache", str(inside)]) == 1
        err = _err(capsys)
        assert f"--tune-cache {inside}:" in err and "would be read as training images" in err
        assert not inside.exists() and not (tmp_path / "m").exists()


def test_the_user_cache_inside_the_train_folder_names_the_variable(train, capsys, monkeypatch):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(train / "user"))
    assert main(["tune", "--train", str(train), *TINY]) == 1
    err = _err(capsys)
    assert f"{train / 'user' / 'tune'} ($ANOMALY_INSPECT_CACHE/tune)" in err
    assert f"--train folder {train}" in err and "$ANOMALY_INSPECT_CACHE" in err.rsplit(";", 1)[1]
    assert not (train / "user").exists()


def test_a_cache_the_listing_does_not_reach_is_taken(demo, train, tmp_path, capsys, tune_reached, monkeypatch):
    """Hidden folders are not listed (the user cache under ~/.cache with --train ~), nor a
    folder beside the one named; fit and evaluate without --auto write no tune cache."""
    for cache in (train / ".cache" / "tune", tmp_path / "elsewhere"):
        with pytest.raises(SystemExit):
            main(["tune", "--train", str(train), *TINY, "--tune-cache", str(cache)])
        assert len(tune_reached.pop("paths")) == 12
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(train / ".cache" / "anomaly_inspect"))
    with pytest.raises(SystemExit):
        main(["tune", "--train", str(train), *TINY])
    assert len(tune_reached.pop("paths")) == 12
    from anomaly_inspect.commands.tune import check_tune_args

    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(train / "user"))
    args = type("Args", (), {"auto": False, "tune_cache": None, "ensemble": None, "grid": None,
                             "candidates": None, "folds": None, "max_tune_images": None,
                             "train": [str(train)]})()
    check_tune_args(args)  # no --auto: nothing written in the cache, nothing refused


# 2. tune --root/--category without --judge

def test_tune_root_category_without_judge_needs_only_train_good(demo, tmp_path, capsys, tune_reached):
    root = tmp_path / "root"
    shutil.copytree(demo / "train", root / "fab" / "train")
    with pytest.raises(SystemExit):
        main(["tune", "--root", str(root), "--category", "fab", *TINY])
    assert sorted(p.name for p in tune_reached["paths"]) == sorted(p.name for p in (demo / "train" / "good").iterdir())
    assert main(["tune", "--root", str(root), "--category", "fab", "--judge", *TINY]) == 1
    assert f"{root / 'fab' / 'test'}: missing" in _err(capsys)  # --judge reads the test split
    # what is missing is named as the adapter names it
    assert main(["tune", "--root", str(root), "--category", "nope", *TINY]) == 1
    assert "category folder not found; categories found under" in _err(capsys)
    (root / "bare").mkdir()
    assert main(["tune", "--root", str(root), "--category", "bare", *TINY]) == 1
    assert f"{root / 'bare' / 'train' / 'good'}: missing" in _err(capsys)


def test_tune_root_category_lists_train_good_as_the_adapter_does(demo, tune_reached):
    """The same images, in the same order, as ``load_mvtec``'s training split."""
    from anomaly_inspect.data.mvtec import load_mvtec

    with pytest.raises(SystemExit):
        main(["tune", "--root", str(demo.parent), "--category", demo.name, *TINY])
    assert tune_reached["paths"] == [s.path for s in load_mvtec(demo.parent, demo.name).train]


# 3. images too small for synthetic anomalies

def test_too_small_images_are_recorded_apart_and_still_fitted_on(demo, tmp_path, capsys, monkeypatch):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.tuning import judge
    from anomaly_inspect.tuning.candidates import Candidate
    from anomaly_inspect.tuning.tune import tune

    root = tmp_path / "root"
    shutil.copytree(demo, root / demo.name)
    good = root / demo.name / "train" / "good"
    cv2.imwrite(str(good / "005_small.png"), np.full((20, 200, 3), 128, np.uint8))
    (good / "zzz_broken.png").write_bytes(b"not an image")
    out = tmp_path / "t.json"
    assert main(["tune", "--train", str(good), *TINY, "--tune-cache", str(tmp_path / "cache"),
                 "--output-json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 unreadable image skipped" in printed
    assert "1 image too small for synthetic anomalies: used for fitting, not held out" in printed
    skipped = {s["path"].rsplit("/", 1)[1]: s for s in json.loads(out.read_text())["tuning"]["skipped_images"]}
    assert skipped["005_small.png"]["kind"] == "too_small" and "too small" in skipped["005_small.png"]["error"]
    assert skipped["zzz_broken.png"]["kind"] == "unreadable"

    base = ModelConfig()
    base.features.image_size, base.features.batch_size = 64, 8
    cands = [Candidate.parse("lite0-64-8+16-mean-stretch")]
    dataset = load_mvtec(root, demo.name)
    result = tune([s.path for s in dataset.train], base, candidates=cands, cache_dir=tmp_path / "cache",
                  progress=False)
    all_train = [s.path for s in dataset.train]
    assert [p.name for p in result.readable(all_train)] == [p.name for p in all_train if p.name != "zzz_broken.png"]
    assert len(result.tuned(all_train)) == result.n_images == 12
    extracted = []
    real = judge.stage_maps

    def spy(backbone, paths, *a, **k):
        extracted.append([p.name for p in paths])
        return real(backbone, paths, *a, **k)

    monkeypatch.setattr(judge, "stage_maps", spy)
    scores = judge.test_scores(dataset, result, cands, base, tmp_path / "cache", False)
    assert "005_small.png" in extracted[0] and "zzz_broken.png" not in extracted[0]  # fitted as fit fits
    assert len(scores[cands[0].name]) == len(dataset.test)


def test_too_few_left_names_each_kind(demo, tmp_path):
    from anomaly_inspect.config import ModelConfig
    from anomaly_inspect.tuning.candidates import Candidate
    from anomaly_inspect.tuning.tune import TooFewImagesError, tune

    folder = tmp_path / "few"
    folder.mkdir()
    for p in sorted((demo / "train" / "good").glob("*.png"))[:5]:
        shutil.copy(p, folder)
    cv2.imwrite(str(folder / "a_small.png"), np.full((12, 12, 3), 9, np.uint8))
    (folder / "b_broken.png").write_bytes(b"nope")
    base = ModelConfig()
    base.features.image_size = 64
    with pytest.raises(TooFewImagesError, match="only 5 left after skipping 1 unreadable and 1 too "
                                                "small for synthetic anomalies"):
        tune(sorted(folder.iterdir()), base, candidates=[Candidate.parse("lite0-64-8+16-mean-stretch")],
             cache_dir=tmp_path / "cache", progress=False)
