"""A dataset folder that holds an earlier screen's or explain's outputs: evaluate, evaluate-lt
and ``tune --root`` read its images as fit and screen do, without the thumbnails, overlays and
strips those runs wrote there (``data.layout``'s one rule: a screen's sub-folders, and the strips
an ``explanations.json`` lists); ``tune --root/--category`` reads train/good as ``load_mvtec``
does (``load_mvtec_train``), and a tune cache outside what the command reads is taken; ``fit
--out`` refuses a link as a link."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data import layout
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import list_images, without_earlier_outputs
from anomaly_inspect.data.mvtec import load_mvtec, load_mvtec_train
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.screening import explain as ex
from anomaly_inspect.screening import model as model_mod
from layout_writer import earlier_screen, rgb_image, small_config, write_image

TINY = ["--image-size", "64", "--candidates", "lite0-64-8+16-mean-stretch", "--batch-size", "8",
        "--quiet"]


@pytest.fixture()
def cat(tmp_path):
    """A small synthetic MVTec-layout category (64 px) with masks."""
    return generate_dataset(tmp_path / "d", "cat", "fabric", n_train=6, n_test_good=3,
                            n_test_per_defect=2, image_size=64, defects=("hole",))


def _paths(dataset):
    return [s.path for s in dataset.train], [s.path for s in dataset.test]


@pytest.mark.parametrize("where", ["test/good", "train/good", "test/hole"])
def test_a_dataset_reads_the_same_images_with_an_earlier_screens_results_in_it(cat, where,
                                                                                caplog):
    before = _paths(load_mvtec(cat))
    earlier_screen(cat / where)  # results.csv + screen.json beside the images, thumbs/ etc.
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.layout"):
        after = _paths(load_mvtec(cat))  # under test/hole: no "no mask .../thumbs/..." either
    assert after == before
    warned = [r.getMessage() for r in caplog.records if "earlier screen" in r.getMessage()]
    assert len(warned) == 1 and str(cat / where / "thumbs") in warned[0], caplog.text
    folders = load_folders(cat / "train" / "good", cat / "test" / "good", cat / "test" / "hole")
    assert sorted(map(str, _paths(folders)[1])) == sorted(map(str, before[1]))


def test_list_images_leaves_out_only_the_folders_a_screen_wrote(tmp_path):
    names = ("a.png", "sub/b.png", "sub/thumbs/c.png")  # thumbs/ of no screen: the user's own
    own = [write_image(tmp_path / "in" / n, rgb_image(8)) for n in names]
    earlier_screen(tmp_path / "in")
    assert list_images(tmp_path / "in") == own
    assert list_images(tmp_path / "in" / "thumbs") == []  # the screen's folder itself, as fit
    assert model_mod.input_images([tmp_path / "in" / "thumbs"], twins="keep") == []


def test_screening_reuses_the_layout_rule(tmp_path, monkeypatch):
    """One rule: screening's without_earlier_outputs asks data.layout which folders a screen
    wrote."""
    files = [write_image(tmp_path / "in" / n, rgb_image(8)) for n in ("a.png", "thumbs/b.png")]
    assert model_mod.without_earlier_outputs(files, [tmp_path / "in"]) == files
    monkeypatch.setattr("anomaly_inspect.data.layout.is_screen_output_folder",
                        lambda folder: folder.name == "thumbs")
    assert model_mod.without_earlier_outputs(files, [tmp_path / "in"]) == [files[0]]
    assert without_earlier_outputs(files) == [files[0]]
    assert without_earlier_outputs(files, keep=[files[1]]) == files  # a file named itself stays


def test_evaluate_after_a_screen_into_test_good_gives_the_same_result(cat):
    from anomaly_inspect.evaluation.evaluate import evaluate

    cfg = ModelConfig()
    cfg.backbone.weights, cfg.backbone.runtime = "random", "torch"
    cfg.features.image_size = 64
    before = evaluate(load_mvtec(cat), cfg, progress=False)
    model = model_mod.fit([cat / "train" / "good"], cfg, progress=False)
    good = cat / "test" / "good"
    model.screen([good], good, overlays="all")
    assert (good / "thumbs").is_dir() and list((good / "overlays").iterdir())
    after = evaluate(load_mvtec(cat), cfg, progress=False)
    assert (after.n_test, after.n_train) == (before.n_test, before.n_train) == (5, 6)
    assert after.image_auroc == before.image_auroc


def test_fit_out_refuses_a_link_to_a_model_directory_as_a_link(tmp_path, images, capsys):
    from anomaly_inspect.cli import main
    from anomaly_inspect.screening.model_dir import MODEL_JSON, check_replaceable

    model = tmp_path / "m"
    model.mkdir()
    (model / MODEL_JSON).write_text("{}")
    link = tmp_path / "link"
    for target in (model, tmp_path / "gone"):  # a model directory; a dangling link
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        why = f"{link}: is a symbolic link (to {target}); give the model directory itself"
        for overwrite in (True, False):
            with pytest.raises(FileExistsError) as err:
                check_replaceable(link, overwrite)
            assert str(err.value) == why
    link.unlink()
    link.symlink_to(model)
    assert main(["fit", "--train", str(images), "--out", str(link), "--overwrite",
                 "--weights", "random", "--image-size", "64", "--quiet"]) != 0
    assert why.replace("gone", "m") in capsys.readouterr().err
    assert os.path.islink(link) and (model / MODEL_JSON).read_text() == "{}"


def _explain_run(folder, names, journal=()):
    """The files an explain --out ``folder`` leaves: its strips (images), listed in
    ``explanations.json`` (``names``) or, a run in progress, its journal (``journal``)."""
    for k, name in enumerate([*names, *journal]):
        write_image(folder / name, rgb_image(16, seed=k))
    (folder / ex.EXPLANATIONS_JSON).write_text(json.dumps(
        [{"path": f"/in/{n}.png", "strip": n} for n in names]))
    if journal:
        (folder / ex.JOURNAL).write_text(json.dumps(
            [{"path": f"/in/{n}.png", "strip": n} for n in journal]) + "\n")


# 1. an explain run's strips in a dataset folder

@pytest.mark.parametrize("where", ["test/good", "test/good/why", "train/good", "test/hole/why"])
def test_a_dataset_reads_the_same_images_with_an_explain_runs_strips_in_it(cat, where, caplog):
    before = _paths(load_mvtec(cat))
    _explain_run(cat / where, ["a_0123456789.jpg"], journal=["b_0123456789.jpg"])
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.layout"):
        after = _paths(load_mvtec(cat))  # under test/hole: no "no mask" for the strips either
    assert after == before
    warned = [r.getMessage() for r in caplog.records if "explain run wrote" in r.getMessage()]
    assert len(warned) == 1 and f"{cat / where} (2)" in warned[0], caplog.text
    assert load_mvtec_train(cat, None) == load_mvtec(cat).train
    folders = load_folders(cat / "train" / "good", cat / "test" / "good", cat / "test" / "hole")
    assert sorted(map(str, _paths(folders)[1])) == sorted(map(str, before[1]))


def test_list_images_leaves_out_only_the_strips_listed(tmp_path):
    own = [write_image(tmp_path / n, rgb_image(8)) for n in ("a.png", "z_0123456789.jpg")]
    _explain_run(tmp_path, ["s_0123456789.jpg"])
    assert layout.list_images(tmp_path) == own  # a strip's look-alike not listed stays
    (tmp_path / ex.EXPLANATIONS_JSON).write_text("[{")  # not ours: nothing is left out
    assert len(layout.list_images(tmp_path)) == 3


def test_screening_takes_the_strip_listing_from_the_data_layer():
    """One reading of explain's records: screening and the layout's rule share it."""
    from anomaly_inspect.data.explanations import listed_strips, read_explanations

    assert ex.listed_strips is listed_strips and ex.read_explanations is read_explanations
    assert not hasattr(model_mod, "listed_strips")


def test_evaluate_after_an_explain_into_test_good_gives_the_same_result(cat):
    from anomaly_inspect.evaluation.evaluate import evaluate

    cfg = small_config()
    before = evaluate(load_mvtec(cat), cfg, progress=False)
    model = model_mod.fit([cat / "train" / "good"], cfg, progress=False)
    good = cat / "test" / "good"
    ex.explain_to_dir(model, [good], good / "why", top=1)
    assert ex.listed_strips(good / "why")
    after = evaluate(load_mvtec(cat), cfg, progress=False)
    assert (after.n_test, after.n_train) == (before.n_test, before.n_train) == (5, 6)
    assert after.image_auroc == before.image_auroc


# 2. tune --root/--category without --judge: load_mvtec's training split, its warnings, errors

def test_load_mvtec_train_warns_and_refuses_as_load_mvtec(cat, caplog):
    shutil.copy(cat / "train" / "good" / "000.png", cat / "train" / "extra.png")
    (cat / "train" / "more").mkdir()
    shutil.copy(cat / "train" / "good" / "001.png", cat / "train" / "more" / "x.png")
    with caplog.at_level(logging.WARNING, logger="anomaly_inspect.data.mvtec"):
        train = load_mvtec_train(cat.parent, cat.name)
    assert train == load_mvtec(cat.parent, cat.name).train
    assert "directly in train/ left out" in caplog.text and "more: 1 image(s) left out" in caplog.text
    with pytest.raises(ValueError, match="root: an empty path"):
        load_mvtec_train("", "cat")
    with pytest.raises(FileNotFoundError, match="category folder not found; categories found"):
        load_mvtec_train(cat.parent, "nope")


def test_tune_root_warns_of_images_outside_train_good(cat, caplog, tune_reached):
    shutil.copy(cat / "train" / "good" / "000.png", cat / "train" / "extra.png")
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit):
        main(["tune", "--root", str(cat.parent), "--category", cat.name, *TINY])
    assert "directly in train/ left out" in caplog.text
    assert tune_reached["paths"] == [s.path for s in load_mvtec(cat).train]


# 3. a tune cache in the category folder, outside what the command reads

def test_a_tune_cache_beside_train_is_taken_and_one_inside_what_is_read_refused(cat, capsys,
                                                                                 tune_reached):
    root = ["--root", str(cat.parent), "--category", cat.name]
    with pytest.raises(SystemExit):
        main(["tune", *root, *TINY, "--tune-cache", str(cat / "tune_cache")])
    assert len(tune_reached.pop("paths")) == 6
    with pytest.raises(SystemExit):  # tune without --judge reads no test split
        main(["tune", *root, *TINY, "--tune-cache", str(cat / "test" / "tc")])
    refused = [(["tune", *root], cat / "train" / "tc"),
               (["tune", *root, "--judge"], cat / "test" / "tc"),
               (["tune", *root, "--judge"], cat / "ground_truth" / "tc"),
               (["evaluate", "--auto", *root], cat / "test" / "tc"),
               (["tune", "--root", str(cat)], cat / "train" / "tc")]  # the category as the root
    for command, inside in refused:
        assert main([*command, *TINY, "--tune-cache", str(inside)]) == 1
        err = capsys.readouterr().err
        assert f"--tune-cache {inside}:" in err and f"folder {inside.parent}," in err, err
        assert not inside.exists()
