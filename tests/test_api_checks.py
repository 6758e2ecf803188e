"""Library-API checks found by review: non-finite hyperparameters and a diverged classifier
head, a scorer-section seed, falsy config sections, a subclass's load, and the messages and
runtime switches of the scorers' constructors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomaly_inspect.config import ConfigError, ModelConfig, config_for_fit, load_config
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import Scorer, build_scorer, check_scorer_params
from anomaly_inspect.scorers.base import ScorerFormatError
from anomaly_inspect.scorers.classifier_head import HeadConfig, train_head
from anomaly_inspect.scorers.distance import KNN
from anomaly_inspect.scorers.params import check_number
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.scorers.tailedcore import SoftPatch, TailedCore

HEAD_SCORERS = ["msp", "energy", "odin", "odin_feature", "line", "vim"]
SEED_MESSAGE = "scorer: seed: set the top-level 'seed' (or --seed) instead; it seeds the scorer too"


def _pooled(n: int = 40, scale: float = 1.0, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    return Features(pooled=(rng.standard_normal((n, 16)) * scale).astype(np.float32))


# --- 1. non-finite hyperparameters, a diverged head ---------------------------------------------
@pytest.mark.parametrize("value", [math.inf, -math.inf, np.float32(np.inf), math.nan])
def test_check_number_finite_refuses_inf_and_nan(value):
    with pytest.raises(ValueError) as err:
        check_number("s", "lr", value, 0, low_open=True, finite=True)
    assert str(err.value) == f"s: lr must be a finite number > 0, got {value!r}"


def test_check_number_finite_says_finite_only_where_the_value_is_not():
    with pytest.raises(ValueError) as err:
        check_number("s", "lr", 0, 0, low_open=True, finite=True)
    assert str(err.value) == "s: lr must be a number > 0, got 0"


def test_check_number_finite_accepts_finite_values_and_the_allowed_ones():
    check_number("s", "x", 1e30, 0, finite=True)
    check_number("s", "x", None, 0, finite=True, allowed=(None,))
    check_number("s", "x", math.inf, 0, low_open=True)  # without finite: inf is a value (p = inf)


@pytest.mark.parametrize("scorer", HEAD_SCORERS)
@pytest.mark.parametrize("param", ["lr", "weight_decay"])
def test_head_scorers_refuse_an_infinite_lr_or_weight_decay(scorer, param):
    # before: accepted; the head trained to NaN and every score was NaN
    with pytest.raises(ValueError, match=rf"^{scorer}: {param} must be a finite number >=? 0, got inf$"):
        build_scorer(scorer, **{param: math.inf})


@pytest.mark.parametrize("scorer", ["odin", "odin_feature"])
@pytest.mark.parametrize("param", ["temperature", "epsilon"])
def test_odin_refuses_an_infinite_temperature_or_epsilon(scorer, param):
    # before: temperature inf gave every image the same score
    with pytest.raises(ValueError, match=rf"^{scorer}: {param} must be a finite number >=? 0, got inf$"):
        build_scorer(scorer, **{param: math.inf})


def test_infinity_stays_a_value_where_it_means_something():
    assert build_scorer("feature_norm", p=np.inf).p == np.inf  # the max norm
    assert build_scorer("line", clip_value=math.inf).clip_value == math.inf  # no clipping


def test_a_head_whose_training_diverges_is_refused_at_fit_naming_the_cause():
    f, y = _pooled(scale=100.0), np.arange(40) % 2
    scorer = build_scorer("msp", epochs=3).fit(f, labels=y)
    before = scorer.score(f).image_scores.copy()
    # before: fit succeeded, every score NaN, and save() wrote a head load() called damaged
    with pytest.raises(ValueError, match=r"^classifier head: training diverged \(its weights hold "
                                         r"NaN or Inf\); lr 1e\+30 or weight_decay 0\.0001 is "
                                         r"likely too large$"):
        train_head(f.pooled, y, HeadConfig(epochs=3, lr=1e30))
    diverging = build_scorer("msp", epochs=3, lr=1e30)
    with pytest.raises(ValueError, match="training diverged"):
        diverging.fit(f, labels=y)
    assert not diverging.is_fitted
    scorer.lr = 1e30  # a refused refit keeps the fitted head
    with pytest.raises(ValueError, match="training diverged"):
        scorer.fit(f, labels=y)
    np.testing.assert_array_equal(scorer.score(f).image_scores, before)


# --- 2. a seed in the scorer section --------------------------------------------------------------
def test_a_scorer_seed_is_refused_for_a_new_fit_before_any_image_is_read(tmp_path):
    # before: fit / evaluate refused it only after reading images
    with pytest.raises(ConfigError) as err:
        config_for_fit(ModelConfig(scorer={"seed": 3}))
    assert str(err.value) == f"config: {SEED_MESSAGE}"
    with pytest.raises(ConfigError) as err:  # a method without a seed: the same message
        config_for_fit(ModelConfig(method="knn", scorer={"seed": 3}))
    assert str(err.value) == f"config: {SEED_MESSAGE}"
    path = tmp_path / "cfg.yaml"
    path.write_text("method: patchcore\nscorer: {seed: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {SEED_MESSAGE}"


def test_a_saved_model_config_with_a_scorer_seed_still_reads():
    # a model saved before the refusal (2026-12-04) records scorer: {seed: N}; open_model_dir
    # reads its model.json with from_dict, which must not refuse a fit that is done
    cfg = ModelConfig.from_dict({"method": "patchcore", "scorer": {"seed": 7}}, "model.json")
    assert cfg.scorer == {"seed": 7}


# --- 3. falsy sections that are not mappings ------------------------------------------------------
@pytest.mark.parametrize("section", ["features", "backbone"])
@pytest.mark.parametrize("value, shown", [("", "''"), (False, "false"), ([], "[]"), (0, "0")])
def test_a_falsy_section_that_is_not_a_mapping_is_refused(section, value, shown):
    # before: read as the defaults, while `scorer: []` was refused
    with pytest.raises(ConfigError, match=rf"^cfg.yaml: {section}: expected a mapping, got "):
        ModelConfig.from_dict({section: value}, "cfg.yaml")


def test_a_null_section_is_still_the_defaults():
    assert ModelConfig.from_dict({"features": None, "backbone": None, "scorer": None}) == ModelConfig()


# --- 4. a subclass's load -------------------------------------------------------------------------
def test_a_subclass_load_refuses_a_folder_holding_another_scorer(tmp_path):
    KNN().fit(_pooled()).save(tmp_path / "knn")
    # before: PatchCore.load returned the KNN
    with pytest.raises(ScorerFormatError) as err:
        PatchCore.load(tmp_path / "knn", progress=False)
    assert str(err.value) == f"{tmp_path / 'knn' / 'scorer.json'}: holds a 'knn' scorer (KNN), not a PatchCore"
    assert isinstance(Scorer.load(tmp_path / "knn"), KNN)  # the base loads any scorer
    assert isinstance(KNN.load(tmp_path / "knn"), KNN)


def test_a_base_class_load_accepts_its_subclasses(tmp_path):
    rng = np.random.default_rng(0)
    patches = Features(patches=rng.standard_normal((6, 3, 3, 8)).astype(np.float32))
    SoftPatch(coreset_ratio=1.0, progress=False).fit(patches).save(tmp_path / "soft")
    assert isinstance(PatchCore.load(tmp_path / "soft", progress=False), SoftPatch)
    with pytest.raises(ScorerFormatError, match=r"holds a 'softpatch' scorer \(SoftPatch\), not a TailedCore"):
        TailedCore.load(tmp_path / "soft", progress=False)


# --- 5. messages ----------------------------------------------------------------------------------
def test_a_key_for_a_method_without_settings_says_it_takes_none():
    with pytest.raises(ValueError) as err:
        check_scorer_params("nan", {"p": 2})
    assert str(err.value) == "scorer: unknown key 'p' for method 'nan'; it takes no settings"
