"""A dataset folder that holds an earlier screen's results: evaluate, evaluate-lt and
``tune --root`` read its images as fit and screen do, without the thumbnails and overlays the
screen wrote there (``data.layout``'s one rule); and ``fit --out`` refuses a link as a link."""

from __future__ import annotations

import logging
import os

import pytest

from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import list_images, without_earlier_outputs
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.synthetic import generate_dataset
from anomaly_inspect.screening import model as model_mod
from layout_writer import earlier_screen, rgb_image, write_image


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
