"""The Python API's argument checks the s42 review left: an engine given by name, screen's
``explain`` of the wrong kind, ``load_folders`` of an empty list, and ``backbone: layers``
the backbone lacks, each refused in one line before any image is read."""

from __future__ import annotations

import pytest

from anomaly_inspect.config import BackboneConfig, FeatureConfig, ModelConfig, config_for_fit
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.mvtec import AnomalyDataset
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.evaluation import evaluate as evaluate_mod
from anomaly_inspect.evaluation.evaluate import evaluate
from anomaly_inspect.features.backbone import LayerRangeError
from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.screening import fit
from anomaly_inspect.screening import model as model_mod
from anomaly_inspect.screening import runner as runner_mod
from anomaly_inspect.screening.runner import screen
from layout_writer import rgb_image, write_image


def _cfg(**backbone) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig(weights="random", **backbone),
                       features=FeatureConfig(image_size=64))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root folder with train/ and new/, a model fitted on train/)."""
    root = tmp_path_factory.mktemp("s42b")
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    for i in range(2):
        write_image(root / "new" / f"n{i}.png", rgb_image(48, seed=100 + i))
    return root, fit([root / "train"], _cfg(), calibration_fraction=0.25, progress=False)


@pytest.fixture()
def images(tmp_path):
    """A folder of readable training images."""
    for i in range(4):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    return tmp_path / "train"


@pytest.fixture()
def reads_nothing(monkeypatch):
    """fit(), evaluate() and screen() fail loudly should they list or read an image first."""
    def read(*args, **kwargs):
        raise AssertionError("images were read before the arguments were refused")

    for module, names in ((model_mod, ("input_images", "build")),
                          (runner_mod, ("input_images",)),
                          (evaluate_mod, ("check_dataset", "build"))):
        for name in names:
            monkeypatch.setattr(module, name, read)


def _dataset() -> AnomalyDataset:
    return AnomalyDataset("tiny", [Sample(f"train{i}.png", 0, "train") for i in range(2)],
                          [Sample(f"test{i}.png", label) for i, label in enumerate((0, 1))])


# ---------------------------------------------------------------- 1: an engine given by name


ENGINE_REFUSAL = r"^engine: expected an Engine \(make_engine\(.*\), got 'local' \(a str\)$"


def test_fit_refuses_an_engine_given_by_name(images, reads_nothing):
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        fit(images, _cfg(), engine="local", progress=False)


def test_screen_refuses_an_engine_given_by_name_before_making_out_dir(tiny, tmp_path,
                                                                     reads_nothing):
    root, model = tiny
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        screen(model, root / "new", out, engine="local", progress=False)
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        model.screen(root / "new", out, engine="local", progress=False)
    assert not out.exists()


def test_iter_score_refuses_an_engine_given_by_name(tiny):
    root, model = tiny
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        model.iter_score(root / "new", engine="local")


def test_an_engine_object_is_still_taken(tiny):
    root, model = tiny
    rows = [r for b in model.iter_score(root / "new", engine=LocalEngine()) for r in b.images]
    assert len(rows) == 2 and not any(r.error for r in rows)


# ---------------------------------------------------------------- 2: screen's explain


@pytest.mark.parametrize("explain", ["3", 2.5, -1, True])
def test_screen_refuses_an_explain_that_is_no_count_before_making_out_dir(
        explain, tiny, tmp_path, reads_nothing):
    root, model = tiny
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^screen: explain must be a whole number >= 0, got "):
        model.screen(root / "new", out, explain=explain, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- 3: load_folders([])


@pytest.mark.parametrize("train", [[], ()])
def test_load_folders_of_an_empty_list_says_so(train):
    with pytest.raises(DatasetLayoutError,
                       match=r"^train_dirs: no training images given \(an empty list\)$"):
        load_folders(train)


# ---------------------------------------------------------------- 4: layers the backbone lacks


LAYERS_REFUSAL = r"^backbone: layers: tf_efficientnet_lite0: layer indices \[9\] out of range 0\.\.4$"


def test_fit_refuses_layers_the_backbone_lacks_before_reading_images(images, reads_nothing):
    cfg = _cfg()
    cfg.backbone.layers = [9]  # a notebook edit: BackboneConfig cannot know the stages
    with pytest.raises(LayerRangeError, match=LAYERS_REFUSAL):
        fit(images, cfg, progress=False)


def test_evaluate_refuses_layers_the_backbone_lacks_before_reading_images(reads_nothing):
    with pytest.raises(LayerRangeError, match=LAYERS_REFUSAL):
        evaluate(_dataset(), _cfg(layers=[1, 9]), progress=False)


def test_layers_the_backbone_has_pass_and_an_unknown_backbone_is_left_to_the_build():
    assert config_for_fit(_cfg(layers=[1, 2])).backbone.layers == [1, 2]
    cfg = _cfg(name="not_a_timm_model", layers=[9])
    assert config_for_fit(cfg).backbone.name == "not_a_timm_model"


# ------------------------------------------- screen's and explain's listed rows are never globs


def test_evaluate_refuses_an_engine_given_by_name(reads_nothing):
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        evaluate(_dataset(), _cfg(), progress=False, engine="local")


def test_a_listed_image_named_like_a_glob_and_gone_is_an_error_row(tiny, tmp_path, monkeypatch):
    """screen scores the images it listed as files: one gone since, named like a glob
    (``scan[9].png``), is one error row beside the scored ones, not a refused run."""
    root, model = tiny
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


def test_explain_of_a_folder_or_glob_is_refused_not_the_first_image(tiny):
    root, model = tiny
    for target in (root / "new", root / "new" / "*.png"):
        with pytest.raises(ValueError, match="not an image file|file not found"):
            model.explain(target)
