"""The Python API's checks as a notebook meets them: a config edited after it was built or
loaded, sections given as mappings or names, a seed faiss cannot take, arguments of the wrong
kind to evaluate / screen, iter_score's folders and globs, the wording of save / screen /
fit refusals; then an engine given by name, screen's ``explain`` of the wrong kind, empty
lists, ``backbone: layers`` the backbone lacks, and screen's / explain's listed rows never
taken as globs."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomaly_inspect.config import (
    BackboneConfig,
    ConfigError,
    FeatureConfig,
    ModelConfig,
    config_for_fit,
    load_config,
)
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.mvtec import AnomalyDataset
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.evaluation import evaluate as evaluate_mod
from anomaly_inspect.evaluation.evaluate import evaluate
from anomaly_inspect.features.backbone import LayerRangeError
from anomaly_inspect.pipeline import LocalEngine
from anomaly_inspect.scorers import get_scorer_class
from anomaly_inspect.screening import fit
from anomaly_inspect.screening import model as model_mod
from anomaly_inspect.screening import runner as runner_mod
from anomaly_inspect.screening.model import load_model
from anomaly_inspect.screening.runner import screen
from layout_writer import rgb_image, write_image


def _cfg(**backbone) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig(weights="random", **backbone),
                       features=FeatureConfig(image_size=64))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root folder with train/ and new/, a model fitted on train/, that model saved)."""
    root = tmp_path_factory.mktemp("s42")
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    for i in range(3):
        write_image(root / "new" / f"n{i}.png", rgb_image(48, seed=100 + i))
    model = fit([root / "train"], _cfg(), calibration_fraction=0.25, progress=False)
    return root, model, model.save(root / "model")


@pytest.fixture()
def images(tmp_path):
    """A folder of readable training images."""
    for i in range(4):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    return tmp_path / "train"


@pytest.fixture()
def reads_nothing(monkeypatch):
    """fit(), evaluate() and screen() fail loudly should they list or read an image before
    refusing."""
    def read(*args, **kwargs):
        raise AssertionError("images were read before the arguments were refused")

    monkeypatch.setattr(model_mod, "input_images", read)
    monkeypatch.setattr(model_mod, "build", read)
    monkeypatch.setattr(runner_mod, "input_images", read)
    monkeypatch.setattr(evaluate_mod, "check_dataset", read)
    monkeypatch.setattr(evaluate_mod, "build", read)


def _error(make) -> str:
    with pytest.raises(ConfigError) as info:
        make()
    return str(info.value)


def _dataset(labels=(0, 1)) -> AnomalyDataset:
    return AnomalyDataset("tiny", [Sample(f"train{i}.png", 0, "train") for i in range(2)],
                          [Sample(f"test{i}.png", label) for i, label in enumerate(labels)])


# ---------------------------------------------------------------- 1: an edited config


EDITS = [  # (edit of a loaded config, the construction that is refused with the same words)
    (lambda c: setattr(c.features, "image_size", 24), lambda: FeatureConfig(image_size=24)),
    (lambda c: setattr(c.features, "crop_size", 400),
     lambda: FeatureConfig(image_size=320, crop_size=400)),
    (lambda c: setattr(c.features, "batch_size", "8"), lambda: FeatureConfig(batch_size="8")),
    (lambda c: setattr(c.features, "resize", "crop"), lambda: FeatureConfig(resize="crop")),
    (lambda c: setattr(c.backbone, "runtime", "tensorrt"),
     lambda: BackboneConfig(runtime="tensorrt")),
    (lambda c: setattr(c, "seed", -1), lambda: ModelConfig(seed=-1)),
    (lambda c: setattr(c, "features", {"image_size": 64}),
     lambda: ModelConfig(features={"image_size": 64})),
]


@pytest.mark.parametrize("edit, construct", EDITS)
def test_fit_refuses_an_edited_config_as_its_construction_would(edit, construct, images,
                                                               reads_nothing):
    cfg = load_config("patchcore")
    edit(cfg)
    want = _error(construct)
    assert _error(lambda: fit(images, cfg, progress=False)) == want


@pytest.mark.parametrize("edit, construct", EDITS[:3])
def test_evaluate_refuses_an_edited_config_as_its_construction_would(edit, construct,
                                                                    reads_nothing):
    cfg = load_config("patchcore")
    edit(cfg)
    assert _error(lambda: evaluate(_dataset(), cfg, progress=False)) == _error(construct)


def test_an_edited_config_fits_no_model_that_load_model_refuses(images, reads_nothing):
    """The notebook tweak of the review: refused before the fit, not when the model is loaded."""
    cfg = _cfg()
    cfg.features.image_size = 24
    with pytest.raises(ConfigError, match=r"^features: image_size: must be at least 32, got 24$"):
        fit(images, cfg, progress=False)


def test_the_checked_config_is_a_copy_the_caller_may_change(images):
    cfg = _cfg()
    checked = cfg.checked()
    assert checked == cfg and checked is not cfg and checked.features is not cfg.features


# ---------------------------------------------------------------- 2: sections of the wrong kind


@pytest.mark.parametrize("kwargs, key, cls", [
    ({"features": {"image_size": 64}}, "features", "FeatureConfig"),
    ({"backbone": "resnet18"}, "backbone", "BackboneConfig"),
])
def test_a_section_that_is_no_section_object_is_refused_naming_its_key(kwargs, key, cls):
    message = _error(lambda: ModelConfig(**kwargs))
    assert message.startswith(f"{key}: expected a {cls}")
    assert "ModelConfig.from_dict" in message and "load_config" in message


def test_a_mapping_is_still_read_by_from_dict():
    assert ModelConfig.from_dict({"features": {"image_size": 64}}).features.image_size == 64


# ---------------------------------------------------------------- 3: PatchCore's seed


@pytest.mark.parametrize("name", ["patchcore", "softpatch", "tailedcore"])
def test_memory_bank_scorers_refuse_a_seed_faiss_cannot_take(name):
    cls = get_scorer_class(name)
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*31.*got 2147483648"):
        cls(seed=2**31, index="ivf", progress=False)
    assert cls(seed=2**31 - 1, progress=False).seed == 2**31 - 1


# ---------------------------------------------------------------- 4: arguments of the wrong kind


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


def test_screen_refuses_a_model_that_is_no_model_before_making_out_dir(tiny, tmp_path):
    root, _, saved = tiny
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=r"^model: expected a Model .*load_model"):
        screen(str(saved), root / "new", out, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- 5: iter_score's inputs


def test_iter_score_expands_folders_and_globs_as_score_does(tiny, monkeypatch):
    root, model, _ = tiny
    monkeypatch.chdir(root)
    want = sorted(Path(r.path).name for r in model.score("new"))
    assert want == ["n0.png", "n1.png", "n2.png"]
    for given in ("new", ["new/*.png"], root / "new"):
        rows = [r for b in model.iter_score(given) for r in b.images]
        assert sorted(Path(r.path).name for r in rows) == want, given
        assert not any(r.error for r in rows), given


# ---------------------------------------------------------------- 6: wording


def test_saving_onto_a_file_does_not_suggest_overwrite(tiny, tmp_path):
    _, model, _ = tiny
    target = tmp_path / "afile.txt"
    target.write_text("hi")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as info:
            model.save(target, overwrite=overwrite)
        assert "overwrite" not in str(info.value) and "not a model directory" in str(info.value)
    assert target.read_text() == "hi"


def test_saving_into_a_folder_of_other_files_does_not_suggest_overwrite(tiny, tmp_path):
    _, model, _ = tiny
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError) as info:
        model.save(tmp_path)
    assert "overwrite" not in str(info.value) and "not a model directory" in str(info.value)


def test_saving_over_a_model_still_asks_for_overwrite(tiny):
    _, model, saved = tiny
    with pytest.raises(FileExistsError, match="pass overwrite=True to replace it"):
        model.save(saved)


def test_a_model_is_saved_into_an_existing_empty_folder_without_overwrite(tiny, tmp_path):
    root, model, _ = tiny
    target = tmp_path / "empty"
    target.mkdir()
    assert model.save(target) == target
    assert [r.score for r in load_model(target).score(root / "new")] == \
        [r.score for r in model.score(root / "new")]


def test_screen_into_a_file_says_it_is_a_file(tiny, tmp_path):
    root, model, _ = tiny
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
def test_load_model_refuses_numeric_arguments_up_front(kwargs, name, tiny, monkeypatch):
    _, _, saved = tiny
    monkeypatch.setattr(model_mod, "loaded_whole", lambda *a: pytest.fail("the model was read"))
    with pytest.raises(ValueError, match=rf"^load_model: {name} must be "):
        load_model(saved, **kwargs)


def test_load_model_takes_a_batch_size(tiny):
    _, _, saved = tiny
    assert load_model(saved, batch_size=2).extractor.batch_size == 2


# ===================== second pass: engines by name, explain, empty lists, layers, listed rows


# ---------------------------------------------------------------- 1: an engine given by name


ENGINE_REFUSAL = r"^engine: expected an Engine \(make_engine\(.*\), got 'local' \(a str\)$"


def test_fit_refuses_an_engine_given_by_name(images, reads_nothing):
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        fit(images, _cfg(), engine="local", progress=False)


def test_screen_refuses_an_engine_given_by_name_before_making_out_dir(tiny, tmp_path,
                                                                     reads_nothing):
    root, model, _ = tiny
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        screen(model, root / "new", out, engine="local", progress=False)
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        model.screen(root / "new", out, engine="local", progress=False)
    assert not out.exists()


def test_iter_score_refuses_an_engine_given_by_name(tiny):
    root, model, _ = tiny
    with pytest.raises(TypeError, match=ENGINE_REFUSAL):
        model.iter_score(root / "new", engine="local")


def test_an_engine_object_is_still_taken(tiny):
    root, model, _ = tiny
    rows = [r for b in model.iter_score(root / "new", engine=LocalEngine()) for r in b.images]
    assert len(rows) == 3 and not any(r.error for r in rows)


# ---------------------------------------------------------------- 2: screen's explain


@pytest.mark.parametrize("explain", ["3", 2.5, -1, True])
def test_screen_refuses_an_explain_that_is_no_count_before_making_out_dir(
        explain, tiny, tmp_path, reads_nothing):
    root, model, _ = tiny
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
    root, model, _ = tiny
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
    root, model, _ = tiny
    for target in (root / "new", root / "new" / "*.png"):
        with pytest.raises(ValueError, match="not an image file|file not found"):
            model.explain(target)


def test_layers_are_counted_as_the_backbone_counts_them_for_a_vit():
    """timm's features_only model of a ViT has 3 stages, the full model Backbone runs 12: the
    early check counts the latter, so layers [5, 8] of vit_tiny pass as Backbone takes them."""
    from anomaly_inspect.features.backbone import stage_strides

    assert len(stage_strides("vit_tiny_patch16_224", "random")) == 12
    cfg = ModelConfig(backbone=BackboneConfig(name="vit_tiny_patch16_224", weights="random",
                                              layers=[5, 8], runtime="torch"),
                      features=FeatureConfig(image_size=224))
    assert config_for_fit(cfg).backbone.layers == [5, 8]
