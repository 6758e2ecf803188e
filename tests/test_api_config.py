"""The Python API's config checks as a notebook meets them: a config edited after it was built
or loaded, sections given as mappings or names, a seed faiss cannot take, ``backbone: layers``
the backbone lacks."""

from __future__ import annotations

import pytest

from anomaly_inspect.config import (
    BackboneConfig,
    ConfigError,
    FeatureConfig,
    ModelConfig,
    config_for_fit,
    load_config,
)
from anomaly_inspect.evaluation.evaluate import evaluate
from anomaly_inspect.features.backbone import LayerRangeError
from anomaly_inspect.scorers import get_scorer_class
from anomaly_inspect.screening import fit
from api_helpers import labelled_dataset as _dataset
from layout_writer import small_config as _cfg


def _error(make) -> str:
    with pytest.raises(ConfigError) as info:
        make()
    return str(info.value)


# ---------------------------------------------------------------- an edited config


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


# ---------------------------------------------------------------- sections of the wrong kind


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


# ---------------------------------------------------------------- PatchCore's seed


@pytest.mark.parametrize("name", ["patchcore", "softpatch", "tailedcore"])
def test_memory_bank_scorers_refuse_a_seed_faiss_cannot_take(name):
    cls = get_scorer_class(name)
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*31.*got 2147483648"):
        cls(seed=2**31, index="ivf", progress=False)
    assert cls(seed=2**31 - 1, progress=False).seed == 2**31 - 1


# ---------------------------------------------------------------- layers the backbone lacks


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


def test_layers_are_counted_as_the_backbone_counts_them_for_a_vit():
    """timm's features_only model of a ViT has 3 stages, the full model Backbone runs 12: the
    early check counts the latter, so layers [5, 8] of vit_tiny pass as Backbone takes them."""
    from anomaly_inspect.features.backbone import stage_strides

    assert len(stage_strides("vit_tiny_patch16_224", "random")) == 12
    cfg = ModelConfig(backbone=BackboneConfig(name="vit_tiny_patch16_224", weights="random",
                                              layers=[5, 8], runtime="torch"),
                      features=FeatureConfig(image_size=224))
    assert config_for_fit(cfg).backbone.layers == [5, 8]
