"""The Python API as a library user meets it: one path given as a str / Path, arguments that
are no paths or of the wrong kind, fit's / evaluate's / screen's / load_model's arguments checked
before any work, an engine given by name, iter_score's folders and globs, the wording of save /
screen / fit refusals, the config a model keeps, and listed rows never taken as globs.
(Config checks through the API: test_api_config.py.)
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.config import (
    ConfigError,
    load_config,
)
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.evaluation import evaluate as evaluate_mod
from anomaly_inspect.evaluation.evaluate import evaluate
from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.scorers import get_scorer_class
from anomaly_inspect.screening import fit
from anomaly_inspect.screening import model as model_mod
from anomaly_inspect.screening import runner as runner_mod
from anomaly_inspect.screening.model import load_model
from anomaly_inspect.screening.runner import screen
from api_helpers import labelled_dataset as _dataset
from layout_writer import fit_tiny_model, rgb_image, write_image
from layout_writer import small_config as _cfg

HEAD_SCORERS = ["msp", "energy", "max_logit", "head_nan", "head_feature_norm", "l2norm", "line",
                "react", "dice", "vim", "odin", "odin_feature"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root folder with train/ and new/, fitted model)."""
    root = tmp_path_factory.mktemp("api")
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    for i in range(2):
        write_image(root / "new" / f"n{i}.png", rgb_image(48, seed=100 + i))
    return root, fit([root / "train"], _cfg(), calibration_fraction=0.25, progress=False)


@pytest.fixture()
def no_build(monkeypatch):
    """fit() fails loudly should it get as far as building the backbone."""
    def build(*args, **kwargs):
        raise AssertionError("fit built the backbone before refusing its arguments")

    monkeypatch.setattr(model_mod, "build", build)


# ---------------------------------------------------------------- one path, not its characters


def test_score_takes_one_path_as_a_str_or_a_path(tiny, monkeypatch):
    root, model = tiny
    monkeypatch.chdir(root)
    want = [r.score for r in model.score(["new/n0.png"])]
    assert [r.score for r in model.score("new/n0.png")] == want
    assert [r.score for r in model.score(Path("new/n0.png"))] == want
    assert [r.score for r in model.score(str(root / "new" / "n0.png"))] == want
    assert len(model.score("new")) == 2  # one folder
    rows = [r for b in model.iter_score(str(root / "new" / "n1.png")) for r in b.images]
    assert len(rows) == 1 and not rows[0].error


def test_screen_takes_one_folder_as_a_str(tiny, tmp_path):
    root, model = tiny
    s = screen(model, str(root / "new"), tmp_path / "out", progress=False, report=False,
               overlays="none")
    assert s.n_inputs == 2 and s.n_scored == 2


def test_fit_takes_one_training_and_one_calibration_folder(tiny, monkeypatch):
    root, _ = tiny
    monkeypatch.chdir(root)
    m = fit("train", _cfg(), calibration=Path("new"), progress=False)
    assert len(m.info.train_images) == 8 and len(m.info.calibration_images) == 2


def test_load_folders_takes_one_folder_per_argument(tiny):
    root, _ = tiny
    ds = load_folders(str(root / "train"), test_normal_dirs=root / "new")
    assert len(ds.train) == 8 and len(ds.test) == 2


@pytest.mark.parametrize("bad", [
    Image.new("RGB", (8, 8)), np.zeros((8, 8, 3), np.uint8), b"new/n0.png", {"a": 1},
    [Image.new("RGB", (8, 8))], [np.zeros((8, 8, 3), np.uint8)], 3,
], ids=["pil", "ndarray", "bytes", "dict", "pil-list", "ndarray-list", "int"])
def test_what_is_no_path_is_refused_naming_the_argument(tiny, tmp_path, bad, no_build):
    _, model = tiny
    accepts = r"expected paths of images or folders \(a str or os\.PathLike, or a list of them\)"
    with pytest.raises(TypeError, match=rf"^inputs: {accepts}, got ") as err:
        model.score(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match=rf"^paths: {accepts}"):
        model.iter_score(bad)
    with pytest.raises(TypeError, match=rf"^inputs: {accepts}"):
        screen(model, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match=rf"^train: {accepts}"):
        fit(bad, _cfg())
    with pytest.raises(TypeError, match=rf"^calibration: {accepts}"):
        fit([tmp_path], _cfg(), calibration=bad)
    with pytest.raises(TypeError, match=rf"^test_anomalous_dirs: {accepts}"):
        load_folders([tmp_path], test_anomalous_dirs=bad)
    with pytest.raises(TypeError, match=r"^image: expected the path of one image"):
        model.explain(bad)


def test_explain_takes_one_path_and_says_so_for_a_list(tiny):
    _, model = tiny
    with pytest.raises(TypeError, match=r"^image: expected the path of one image .* got a list; "
                                        r"explain one image per call"):
        model.explain(["x.png"])


# ---------------------------------------------------------------- fit's arguments, before any work


@pytest.mark.parametrize("fpr", [0, 1, -0.1, 1.5, "0.05", None, float("nan")])
def test_fit_refuses_a_bad_target_fpr_before_any_work(tiny, fpr, no_build):
    root, _ = tiny
    with pytest.raises(ValueError, match=r"target_fpr must be a number in \(0, 1\), got "):
        fit([root / "train"], _cfg(), target_fpr=fpr, progress=False)


@pytest.mark.parametrize("cfg", ["patchcore", {"method": "knn"}, Path("patchcore.yaml")])
def test_fit_refuses_a_cfg_that_is_no_model_config(tiny, cfg, no_build):
    root, _ = tiny
    with pytest.raises(TypeError, match=r"^cfg: expected a ModelConfig \(read a YAML file or a "
                                        r"packaged config with load_config\(\.\.\.\)\), got "):
        fit([root / "train"], cfg, progress=False)


def test_a_class_conditional_mahalanobis_needs_labels_and_is_refused_before_any_work(tiny,
                                                                                     no_build):
    root, _ = tiny
    cfg = _cfg()
    cfg.method, cfg.scorer = "mahalanobis", {"class_conditional": True}
    with pytest.raises(ConfigError, match=r"^config: method 'mahalanobis' with these settings "
                                          r"fits on ID class labels"):
        fit([root / "train"], cfg, progress=False)
    cfg.scorer = {}
    assert not cfg.check_scorer().needs_labels


def test_label_scorers_say_so_and_only_they():
    for name in HEAD_SCORERS:
        assert get_scorer_class(name).needs_labels, name
    for name in ("patchcore", "knn", "mahalanobis", "feature_norm"):
        assert not get_scorer_class(name).needs_labels, name


@pytest.mark.parametrize("method", HEAD_SCORERS)
def test_fit_refuses_a_label_scorer_before_building_the_backbone(tiny, method, no_build):
    root, _ = tiny
    cfg = _cfg()
    cfg.method = method
    with pytest.raises(ConfigError, match=rf"^config: method '{method}' with these settings fits "
                                          r"on ID class labels, which fitting a model never has"):
        fit([root / "train"], cfg, progress=False)


def test_the_cli_refuses_a_label_scorer_before_building_the_backbone(tiny, tmp_path, no_build,
                                                                      capsys):
    root, _ = tiny
    assert main(["fit", "--train", str(root / "train"), "--out", str(tmp_path / "m"),
                 "--method", "msp", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --method msp: method 'msp' with these settings fits on ID "
                          "class labels")
    assert err.count("\n") == 1


def test_a_config_file_naming_a_label_scorer_is_refused_when_read(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: energy\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{f}: method 'energy' with these settings fits on ID"):
        load_config(f)


# ---------------------------------------------------------------- the config a model keeps


def test_the_model_keeps_its_own_copy_of_the_config(tiny):
    root, _ = tiny
    cfg = _cfg()
    model = fit([root / "train"], cfg, calibration_fraction=0.25, progress=False)
    before = copy.deepcopy(model.cfg)
    assert model.cfg is not cfg and model.cfg == cfg
    cfg.method = "knn"
    cfg.features.image_size = 200
    assert model.cfg == before and model.cfg.method == "patchcore"
    assert model.cfg.features.image_size == 64


# The Python API's checks as a notebook meets them: arguments of the wrong kind to evaluate /
# screen, iter_score's folders and globs, the wording of save / screen / fit refusals; an engine
# given by name, screen's explain of the wrong kind, empty lists, and screen's / explain's listed
# rows never taken as globs.
@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """(root folder with train/ and new/, a model fitted on train/, that model saved)."""
    root = tmp_path_factory.mktemp("api_saved")
    for i in range(3):
        write_image(root / "new" / f"n{i}.png", rgb_image(48, seed=100 + i))
    return root, *fit_tiny_model(root)


# ---------------------------------------------------------------- arguments of the wrong kind


@pytest.mark.parametrize("cfg", ["patchcore", {"seed": 1}])
def test_evaluate_refuses_a_cfg_that_is_no_model_config_as_fit_does(cfg, images, reads_nothing):
    with pytest.raises(TypeError) as fitted:
        fit(images, cfg, progress=False)
    with pytest.raises(TypeError) as evaluated:
        evaluate(_dataset(), cfg, progress=False)
    assert str(evaluated.value) == str(fitted.value)
    assert str(evaluated.value).startswith("cfg: expected a ModelConfig")


def test_evaluate_takes_no_cfg_as_the_default_config(monkeypatch):
    """cfg=None is the defaults, as for fit: the next check (the dataset's labels) answers."""
    seen = []
    monkeypatch.setattr(evaluate_mod, "check_dataset",
                        lambda dataset, max_pixels: seen.append(dataset) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        evaluate(_dataset(), None, progress=False)
    with pytest.raises(ZeroDivisionError):
        evaluate(_dataset(), progress=False)
    assert len(seen) == 2


@pytest.mark.parametrize("dataset", ["/some/folder", ["a.png"]])
def test_evaluate_refuses_a_dataset_that_is_no_dataset(dataset, reads_nothing):
    with pytest.raises(TypeError, match=r"^dataset: expected an AnomalyDataset .*load_mvtec"):
        evaluate(dataset, _cfg(), progress=False)


def test_screen_refuses_a_model_that_is_no_model_before_making_out_dir(saved_tiny, tmp_path):
    root, _, saved = saved_tiny
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=r"^model: expected a Model .*load_model"):
        screen(str(saved), root / "new", out, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- iter_score's inputs


def test_iter_score_expands_folders_and_globs_as_score_does(saved_tiny, monkeypatch):
    root, model, _ = saved_tiny
    monkeypatch.chdir(root)
    want = sorted(Path(r.path).name for r in model.score("new"))
    assert want == ["n0.png", "n1.png", "n2.png"]
    for given in ("new", ["new/*.png"], root / "new"):
        rows = [r for b in model.iter_score(given) for r in b.images]
        assert sorted(Path(r.path).name for r in rows) == want, given
        assert not any(r.error for r in rows), given


# ---------------------------------------------------------------- wording


def test_saving_onto_a_file_does_not_suggest_overwrite(saved_tiny, tmp_path):
    _, model, _ = saved_tiny
    target = tmp_path / "afile.txt"
    target.write_text("hi")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as info:
            model.save(target, overwrite=overwrite)
        assert "overwrite" not in str(info.value) and "not a model directory" in str(info.value)
    assert target.read_text() == "hi"


def test_saving_into_a_folder_of_other_files_does_not_suggest_overwrite(saved_tiny, tmp_path):
    _, model, _ = saved_tiny
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError) as info:
        model.save(tmp_path)
    assert "overwrite" not in str(info.value) and "not a model directory" in str(info.value)


def test_saving_over_a_model_still_asks_for_overwrite(saved_tiny):
    _, model, saved = saved_tiny
    with pytest.raises(FileExistsError, match="pass overwrite=True to replace it"):
        model.save(saved)


def test_a_model_is_saved_into_an_existing_empty_folder_without_overwrite(saved_tiny, tmp_path):
    root, model, _ = saved_tiny
    target = tmp_path / "empty"
    target.mkdir()
    assert model.save(target) == target
    assert [r.score for r in load_model(target).score(root / "new")] == \
        [r.score for r in model.score(root / "new")]


def test_screen_into_a_file_says_it_is_a_file(saved_tiny, tmp_path):
    root, model, _ = saved_tiny
    target = tmp_path / "afile2.txt"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"afile2.txt: is a file, not a folder"):
        model.screen(root / "new", target, progress=False)
    assert target.read_text() == "x"


def test_fit_of_an_empty_list_says_so(reads_nothing):
    with pytest.raises(ValueError, match=r"^no training images given \(an empty list\)$"):
        fit([], _cfg(), progress=False)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_pixels": -5}, "max_pixels"),
    ({"max_pixels": 0}, "max_pixels"),
    ({"max_pixels": "100"}, "max_pixels"),
    ({"calibration_fraction": "0.2"}, "calibration_fraction"),
    ({"calibration_fraction": 1.0}, "calibration_fraction"),
])
def test_fit_refuses_numeric_arguments_up_front(kwargs, name, images, reads_nothing):
    with pytest.raises(ValueError, match=rf"^fit: {name} must be "):
        fit(images, _cfg(), progress=False, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -1}, "batch_size"),
    ({"batch_size": "4"}, "batch_size"),
    ({"max_pixels": 0}, "max_pixels"),
])
def test_load_model_refuses_numeric_arguments_up_front(kwargs, name, saved_tiny, monkeypatch):
    _, _, saved = saved_tiny
    monkeypatch.setattr(model_mod, "loaded_whole", lambda *a: pytest.fail("the model was read"))
    with pytest.raises(ValueError, match=rf"^load_model: {name} must be "):
        load_model(saved, **kwargs)


def test_load_model_takes_a_batch_size(saved_tiny):
    _, _, saved = saved_tiny
    assert load_model(saved, batch_size=2).extractor.batch_size == 2


# ---------------------------------------------------------------- an engine given by name


ENGINE_REFUSAL = r"^engine: expected an Engine \(make_engine\(.*\), got 'local' \(a str\)$"


def test_fit_refuses_an_engine_given_by_name(images, reads_nothing):
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        fit(images, _cfg(), engine="local", progress=False)


def test_screen_refuses_an_engine_given_by_name_before_making_out_dir(saved_tiny, tmp_path,
                                                                     reads_nothing):
    root, model, _ = saved_tiny
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        screen(model, root / "new", out, engine="local", progress=False)
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        model.screen(root / "new", out, engine="local", progress=False)
    assert not out.exists()


def test_iter_score_refuses_an_engine_given_by_name(saved_tiny):
    root, model, _ = saved_tiny
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        model.iter_score(root / "new", engine="local")


def test_an_engine_object_is_still_taken(saved_tiny):
    root, model, _ = saved_tiny
    rows = [r for b in model.iter_score(root / "new", engine=LocalEngine()) for r in b.images]
    assert len(rows) == 3 and not any(r.error for r in rows)


# ---------------------------------------------------------------- screen's explain


@pytest.mark.parametrize("explain", ["3", 2.5, -1, True])
def test_screen_refuses_an_explain_that_is_no_count_before_making_out_dir(
        explain, saved_tiny, tmp_path, reads_nothing):
    root, model, _ = saved_tiny
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^screen: explain must be a whole number >= 0, got "):
        model.screen(root / "new", out, explain=explain, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- load_folders([])


@pytest.mark.parametrize("train", [[], ()])
def test_load_folders_of_an_empty_list_says_so(train):
    with pytest.raises(DatasetLayoutError,
                       match=r"^train_dirs: no training images given \(an empty list\)$"):
        load_folders(train)


# ------------------------------------------- screen's and explain's listed rows are never globs


def test_evaluate_refuses_an_engine_given_by_name(reads_nothing):
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        evaluate(_dataset(), _cfg(), progress=False, engine="local")


def test_a_listed_image_named_like_a_glob_and_gone_is_an_error_row(saved_tiny, tmp_path, monkeypatch):
    """screen scores the images it listed as files: one gone since, named like a glob
    (``scan[9].png``), is one error row beside the scored ones, not a refused run."""
    root, model, _ = saved_tiny
    new = tmp_path / "new"
    for i in range(2):
        write_image(new / f"n{i}.png", rgb_image(48, seed=100 + i))
    gone = new / "scan[9].png"
    listed = runner_mod.input_images
    monkeypatch.setattr(runner_mod, "input_images", lambda *a, **k: [*listed(*a, **k), gone])
    screen(model, new, tmp_path / "out", progress=False)
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 3
    assert sum(",error," in r for r in rows) == 1 and any("scan[9].png" in r for r in rows)


def test_explain_of_a_folder_or_glob_is_refused_not_the_first_image(saved_tiny):
    root, model, _ = saved_tiny
    for target in (root / "new", root / "new" / "*.png"):
        with pytest.raises(ValueError, match="not an image file|file not found"):
            model.explain(target)
