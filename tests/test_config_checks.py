"""From a config review: settings that cannot work are refused when the config is read (or
at the top of fit / evaluate), naming the file or the flag and the key, not after the
training images are extracted: a ``--method`` that needs class labels without ``--config``,
a ``block_feature_norm`` block the backbone does not make, a crop below the backbone's
minimum input, an unknown backbone name. Also how YAML is read: exponent floats, and invalid
YAML as one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.config import (
    CONFIG_DIR,
    ConfigError,
    FeatureConfig,
    ModelConfig,
    load_config,
    read_yaml_mapping,
)
from anomaly_inspect.data.mvtec import AnomalyDataset
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.evaluation.evaluate import evaluate
from anomaly_inspect.screening import fit

LABELS = "method 'msp' with these settings fits on ID class labels"


def _error(capsys) -> str:
    """The one line a refused command printed."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    """Model-building commands on four small images per folder (the commands check that their
    inputs exist before the config; the errors below are the ones they gave after extraction)."""
    rng = np.random.default_rng(0)
    for name in ("train", "good", "bad"):
        (tmp_path / name).mkdir(exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / name / f"{i}.png")
    return {
        "fit": ["fit", "--train", str(tmp_path / "train"), "--out", str(tmp_path / "m"), "--quiet"],
        "evaluate": ["evaluate", "--dataset", "folder", "--train-dir", str(tmp_path / "train"),
                     "--test-normal-dir", str(tmp_path / "good"), "--test-anomalous-dir",
                     str(tmp_path / "bad"), "--quiet"],
    }


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------ 1: a --method that needs labels, no --config


@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_a_method_needing_labels_is_refused_up_front_without_a_config(tmp_path, capsys, command):
    assert main([*_commands(tmp_path)[command], "--method", "msp"]) != 0
    assert _error(capsys).startswith(f"error: --method msp: {LABELS}")


def test_evaluate_refuses_a_method_needing_labels_before_reading_the_dataset(tmp_path):
    missing = tmp_path / "missing.png"  # check_dataset would refuse it, had it come first
    dataset = AnomalyDataset("c", [Sample(missing, 0, "train")], [Sample(missing, 0), Sample(missing, 1)])
    with pytest.raises(ConfigError, match=f"^config: {LABELS}"):
        evaluate(dataset, ModelConfig(method="msp"), progress=False)


# ------------------------------------------------ 2: block_feature_norm's block


def test_build_refuses_a_block_the_default_layers_lack_before_any_extraction(monkeypatch):
    """A config without ``layers`` leaves the stages to the backbone: ``build`` (which fit,
    evaluate and the engines' workers call) checks the block once the backbone is built, before
    an extractor exists."""
    from anomaly_inspect.pipeline import builders

    monkeypatch.setattr(builders, "FeatureExtractor", None)  # reaching it would be a TypeError
    cfg = ModelConfig.from_dict({"backbone": {"weights": "random", "runtime": "torch"},
                                 "method": "block_feature_norm", "scorer": {"block": "99"}})
    with pytest.raises(ConfigError, match=r"^config: scorer: block: no block '99'; available: final, 2, 3$"):
        builders.build(cfg, progress=False)


def test_a_block_the_given_layers_lack_is_refused_and_one_they_make_is_taken(tmp_path):
    bad = _config(tmp_path, "backbone: {layers: [1, 2]}\nmethod: block_feature_norm\n"
                            "scorer: {block: '3'}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == f"{bad}: scorer: block: no block '3'; available: final, 1, 2"
    ok = ModelConfig.from_dict({"backbone": {"layers": [1, 3]}, "method": "block_feature_norm",
                                "scorer": {"block": "3"}})
    assert ok.check_scorer().block == "3"


@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_the_commands_refuse_the_block_before_any_work(tmp_path, capsys, command):
    path = _config(tmp_path, "method: block_feature_norm\nscorer: {block: '99'}\n")
    assert main([*_commands(tmp_path)[command], "--config", str(path)]) != 0
    assert _error(capsys) == f"error: {path}: scorer: block: no block '99'; available: final, 2, 3"


def test_layers_flags_that_drop_the_block_are_named(tmp_path, capsys):
    path = _config(tmp_path, "method: block_feature_norm\nscorer: {block: '3'}\n")
    assert main([*_commands(tmp_path)["fit"], "--config", str(path), "--layers", "1,2"]) != 0
    assert _error(capsys) == (f"error: {path} with --layers 1,2: scorer: block: no block '3'; "
                              f"available: final, 1, 2")


def test_fit_refuses_a_block_its_layers_lack_before_looking_for_images(tmp_path):
    cfg = ModelConfig(method="block_feature_norm", scorer={"block": "7"})
    cfg.backbone.layers = [2, 3]
    with pytest.raises(ConfigError, match=r"^config: scorer: block: no block '7'; available: final, 2, 3$"):
        fit(tmp_path / "missing", cfg, progress=False)


# ------------------------------------------------ 3: crop_size below the minimum input


def test_a_crop_below_the_minimum_input_is_refused_as_image_size_is(tmp_path):
    with pytest.raises(ConfigError, match=r"^features: crop_size: must be at least 32, got 1$"):
        FeatureConfig(image_size=64, crop_size=1)
    path = _config(tmp_path, "features: {image_size: 64, crop_size: 31}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: features: crop_size: must be at least 32, got 31"
    assert FeatureConfig(image_size=64, crop_size=32).input_size == 32


# ------------------------------------------------ 4: an unknown backbone name


def test_an_unknown_backbone_in_a_file_names_the_file_and_the_key(tmp_path, capsys):
    path = _config(tmp_path, "backbone: {name: notamodel}\n")
    assert main([*_commands(tmp_path)["fit"], "--config", str(path)]) != 0
    assert _error(capsys).startswith(f"error: {path}: backbone: name: unknown backbone "
                                     f"'notamodel': not a timm model name.")


def test_an_unknown_backbone_flag_names_the_flag(tmp_path, capsys):
    path = _config(tmp_path, "backbone: {name: tf_efficientnet_lite0}\n")
    assert main([*_commands(tmp_path)["evaluate"], "--config", str(path), "--backbone", "notamodel"]) != 0
    assert _error(capsys).startswith("error: --backbone notamodel: unknown backbone 'notamodel': "
                                     "not a timm model name.")


# ------------------------------------------------ 5: longtail_softpatch_soft's soft_weight comment


def test_the_soft_weight_comment_says_what_evaluate_lt_does():
    """The comment on ``soft_weight`` says it needs softpatch among --methods: a method list
    without softpatch refuses the key, one with it leaves it to softpatch."""
    from anomaly_inspect.scorers import merge_scorer_params

    path = CONFIG_DIR / "longtail_softpatch_soft.yaml"
    line = next(t for t in path.read_text().splitlines() if t.strip().startswith("soft_weight:"))
    comment = line.split("#", 1)[1]
    assert "--methods" in comment and "softpatch" in comment and "ignore" not in comment
    section = yaml.safe_load(path.read_text())["scorer"]
    with pytest.raises(ValueError, match="soft_weight"):
        merge_scorer_params(section, ["patchcore", "tailedcore"], {})
    assert merge_scorer_params(section, ["patchcore", "softpatch"], {}) == {"soft_weight": True}


# YAML: exponent floats are floats, and invalid YAML is one line.
# ---------------------------------------------------------------- YAML


def test_yaml_exponent_floats_are_floats_and_ints_stay_ints(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: patchcore\nseed: 3\nscorer:\n  coreset_ratio: 5E-2\n", encoding="utf-8")
    cfg = load_config(f)
    assert cfg.scorer["coreset_ratio"] == 0.05 and type(cfg.scorer["coreset_ratio"]) is float
    assert cfg.seed == 3 and type(cfg.seed) is int
    g = tmp_path / "g.yaml"
    g.write_text("a: 1e-3\nb: 5E-4\nc: -1.5e+2\nd: 1.0e5\ne: 10\nf: '1e-3'\ng: .5e1\nh: 1_000\n",
                 encoding="utf-8")
    assert read_yaml_mapping(g) == {"a": 1e-3, "b": 5e-4, "c": -150.0, "d": 1e5, "e": 10,
                                    "f": "1e-3", "g": 5.0, "h": 1000}
    assert [type(v) for v in read_yaml_mapping(g).values()] == [float] * 4 + [int, str, float, int]
    import yaml
    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # PyYAML's own loader is left as it is


def test_invalid_yaml_is_one_line_with_its_line_and_column(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: patchcore\n: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{f}: line 2, column 1: invalid YAML (")
