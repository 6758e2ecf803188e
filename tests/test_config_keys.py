"""An unknown key in a config's ``scorer:`` section is one line, for every command."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.config import ConfigError, ModelConfig
from anomaly_inspect.evaluation.ood_benchmark import load_ood_config
from anomaly_inspect.pipeline import build


@pytest.fixture()
def tiny(tmp_path):
    """Four small images per folder and a config with a misspelt scorer key."""
    rng = np.random.default_rng(0)
    for name in ("train", "good", "bad"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / name / f"{i}.png")
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("method: patchcore\nscorer:\n  coreset_ratio: 0.5\n  coreset_ration: 0.5\n")
    return tmp_path, cfg


def _assert_one_line_naming_the_key(err: str, cfg):
    err = err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"error: {cfg}: scorer: unknown key 'coreset_ration' for method "
                          f"'patchcore'")
    assert "accepted keys: " in err and "coreset_ratio" in err and "num_neighbors" in err


def test_evaluate_names_the_unknown_key(tiny, capsys):
    root, cfg = tiny
    code = main(["evaluate", "--dataset", "folder", "--train-dir", str(root / "train"),
                 "--test-normal-dir", str(root / "good"), "--test-anomalous-dir", str(root / "bad"),
                 "--config", str(cfg), "--quiet"])
    assert code == 1
    _assert_one_line_naming_the_key(capsys.readouterr().err, cfg)


def test_fit_names_the_unknown_key(tiny, capsys):
    root, cfg = tiny
    code = main(["fit", "--train", str(root / "train"), "--out", str(root / "model"),
                 "--config", str(cfg), "--quiet"])
    assert code == 1
    _assert_one_line_naming_the_key(capsys.readouterr().err, cfg)
    assert not (root / "model").exists()


def test_library_check_before_any_backbone_is_built():
    with pytest.raises(ValueError, match=r"unknown keys 'a', 'b' for method 'knn'; accepted keys: k"):
        build(ModelConfig(method="knn", scorer={"k": 3, "b": 1, "a": 2}))


def test_a_config_without_method_refuses_keys_no_method_takes_as_evaluate_lt_does(tmp_path):
    """The file's check and evaluate-lt's (its methods) are one: ``merge_scorer_params``; the
    message names no method's keys when the file names no method."""
    from anomaly_inspect.config import load_config
    from anomaly_inspect.scorers import merge_scorer_params

    path = tmp_path / "c.yaml"
    path.write_text("scorer: {soft_weight: true, k: 3, coreset_ration: 0.5}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: scorer settings ['coreset_ration'] are not parameters "
                               f"of any method")
    path.write_text("scorer: {soft_weight: true, k: 3}\n")  # SoftPatch's and KNN's: read
    assert load_config(path).scorer == {"soft_weight": True, "k": 3}
    with pytest.raises(ValueError, match=r"^scorer settings \['k'\] are not parameters of any of "
                                         r"\['patchcore', 'softpatch'\]$"):
        merge_scorer_params(load_config(path).scorer, ["patchcore", "softpatch"], {})


def test_reading_the_config_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, anomaly_inspect.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ood_benchmark_scorer_params_are_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark: isic\ndata: {}\nsplits: [ink_all]\n"
                   "scorers: [{name: knn, params: {kk: 3}}]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: scorer 'knn' params: unknown key 'kk'"):
        load_ood_config(bad)


@pytest.mark.parametrize("section,key", [("features", "imag_size"), ("backbone", "layer")])
def test_unknown_section_keys_name_the_section_and_the_accepted_keys(tmp_path, section, key):
    from anomaly_inspect.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(f"{section}: {{{key}: 1}}\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: {section}: unknown key '{key}'; accepted keys: ") as info:
        load_config(path)
    assert ("image_size" if section == "features" else "layers") in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("seed: abc", "seed: expected an integer, got 'abc'"),
    ("seed: -1", "seed: must be at least 0, got -1"),
    ("features: {batch_size: '32'}", "features: batch_size: expected an integer, got '32'"),
    ("features: {image_size: big}", "features: image_size: expected an integer, got 'big'"),
    ("features: {image_size: 8}", "features: image_size: must be at least 32, got 8"),
    ("features: {embed_dim: 0}", "features: embed_dim: must be at least 1, got 0"),
    ("features: {image_size: 64, crop_size: 80}", "features: crop_size (80) must not exceed image_size (64)"),
    ("backbone: {name: 5}", "backbone: name: expected a string, got 5"),
    ("backbone: {layers: '2,3'}", "backbone: layers: expected a list of integers or null, got '2,3'"),
    ("scorer: [1]", "scorer: expected a mapping, got [1]"),
])
def test_values_of_the_wrong_kind_are_one_line_naming_the_key(tmp_path, text, message):
    from anomaly_inspect.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_values_of_the_right_kind_load():
    cfg = ModelConfig.from_dict({"backbone": {"layers": [2, 3], "weights": None},
                                 "features": {"embed_dim": None, "crop_size": 256}, "seed": 3})
    assert cfg.backbone.layers == [2, 3] and cfg.features.embed_dim is None and cfg.seed == 3


@pytest.mark.parametrize("params, message", [
    ({"coreset_ratio": 1.5}, r"coreset_ratio must be a number in \(0, 1\], got 1.5"),
    ({"coreset_ratio": "0.1"}, r"coreset_ratio must be a number in \(0, 1\], got '0.1'"),
    ({"num_neighbors": 0}, "num_neighbors must be a whole number >= 1, got 0"),
    ({"num_neighbors": 2.0}, "num_neighbors must be a whole number >= 1, got 2.0"),
    ({"projection_dim": -1}, "projection_dim must be a whole number >= 1 or None, got -1"),
    ({"chunk_size": 100.5}, "chunk_size must be a whole number >= 1 or None, got 100.5"),
])
def test_patchcore_parameters_out_of_range_fail_before_any_backbone(params, message):
    with pytest.raises(ValueError, match=message):
        build(ModelConfig(scorer=params))


def test_patchcore_whole_numbers_take_numpy_integers_and_ratios_take_ints():
    from anomaly_inspect.scorers import build_scorer

    pc = build_scorer("patchcore", coreset_ratio=1, num_neighbors=np.int64(3), chunk_size=np.int32(64))
    assert pc.num_neighbors == 3 and pc.coreset_ratio == 1


@pytest.mark.parametrize("text, message", [
    ("method: nonexistent\n", "unknown method 'nonexistent'; available: "),
    ("method: patchcore\nscorer:\n  coreset_ratio: 1.5\n", "coreset_ratio must be a number in (0, 1]"),
])
def test_a_config_file_names_a_bad_method_or_scorer_value_when_read(tmp_path, text, message):
    from anomaly_inspect.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("benchmark: mvtec_heldout\ndata: {category: bottle, flod: 1}\nsplits: [c]\nscorers: [knn]\n",
     r"data: unknown key\(s\) \['flod'\] for benchmark 'mvtec_heldout'"),
    ("benchmark: mvtec_heldout\ndata: {category: bottle}\nsynthetic: {seed: 3}\nsplits: [c]\n"
     "scorers: [knn]\n", r"synthetic: unknown key\(s\) \['seed'\] for benchmark 'mvtec_heldout'"),
    ("benchmark: isic\ndata: {}\nsplits: ink_all\nscorers: [knn]\n",
     r"splits: expected a list of split names, got 'ink_all'"),
    ("benchmark: isic\ndata: {}\nseed: '0'\nsplits: [ink_all]\nscorers: [knn]\n",
     r"seed: expected a whole number >= 0, got '0'"),
    ("benchmark: mvtec_heldout\ndata: {category: bottle, folds: two}\nsplits: [c]\nscorers: [knn]\n",
     r"data: folds: expected a whole number >= 2, got 'two'"),
])
def test_ood_benchmark_data_sections_are_checked(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=rf"bad\.yaml: {message}"):
        load_ood_config(bad)


def test_a_key_given_twice_is_refused_naming_the_file_the_key_and_its_lines(tmp_path):
    from anomaly_inspect.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("features:\n  image_size: 64\nfeatures:\n  batch_size: 8\n")
    with pytest.raises(ConfigError) as info:  # before: the first block was dropped silently
        load_config(path)
    assert str(info.value) == (f"{path}: line 3: key 'features' given twice (first at line 1); "
                               f"only one would be read: merge them")
    path.write_text("method: knn\nscorer: {k: 1, k: 2}\n")
    with pytest.raises(ConfigError, match=r"line 2: key 'k' given twice \(first at line 2\)"):
        load_config(path)
    path.write_text("features: &f {image_size: 64}\nbackbone: {name: x}\n"
                    "scorer: {<<: {coreset_ratio: 0.2}, coreset_ratio: 0.1}\n")
    assert load_config(path).scorer == {"coreset_ratio": 0.1}  # a merge may be overridden


def test_a_seed_under_scorer_is_refused_pointing_to_the_top_level_seed(tmp_path):
    from anomaly_inspect.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("method: patchcore\nscorer: {seed: 3}\nseed: 5\n")
    message = "scorer: seed: set the top-level 'seed' (or --seed) instead; it seeds the scorer too"
    with pytest.raises(ConfigError) as info:  # before: the scorer took 3, model.json said 5
        load_config(path)
    assert str(info.value) == f"{path}: {message}"
    with pytest.raises(ConfigError) as info:  # a config built in code: refused before a backbone
        build(ModelConfig(scorer={"seed": 3}, seed=5))
    assert str(info.value) == f"config: {message}"


def test_empty_sections_are_read_alike(tmp_path):
    from anomaly_inspect.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("backbone:\nfeatures:\nscorer:\n")  # before: scorer: expected a mapping
    assert load_config(path) == ModelConfig()


def test_a_folder_given_as_config_is_said_to_be_one(tmp_path):
    from anomaly_inspect.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == (f"{tmp_path}: is a folder; give a config file (YAML) or a "
                               f"packaged config name")


def test_an_ood_benchmark_config_given_to_fit_is_named_as_one(tmp_path, capsys):
    assert main(["fit", "--train", str(tmp_path), "--out", str(tmp_path / "m"),
                 "--config", "ood/isic_all", "--quiet"]) == 1
    assert capsys.readouterr().err == (
        "error: ood/isic_all: an ood-benchmark config (it names a 'benchmark'), not a model "
        "config; give it to 'anomaly-inspect ood-benchmark --config'\n")


def test_a_bad_scorer_value_names_the_section_not_an_unrelated_flag(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("scorer: {coreset_ratio: 1.5}\n")  # no method: checked with the command's
    assert main(["fit", "--train", str(tmp_path), "--out", str(tmp_path / "m"),
                 "--config", str(path), "--image-size", "64", "--quiet"]) == 1
    assert capsys.readouterr().err == (f"error: {path}: scorer: patchcore: coreset_ratio must be "
                                       f"a number in (0, 1], got 1.5\n")


@pytest.mark.parametrize("flags, source", [((), "CONFIG"), (("--layers", "1,9"), "--layers 1,9")])
def test_layers_the_backbone_lacks_name_the_file_or_flag_and_the_key(tiny, capsys, flags, source):
    """Out-of-range stages are known only once the backbone is built (its stage list), long
    after the config was read: the error still names where they came from and the key."""
    root, _ = tiny
    cfg = root / "layers.yaml"
    cfg.write_text("backbone:\n  layers: [9]\n  weights: random\n")
    code = main(["fit", "--train", str(root / "train"), "--out", str(root / "model"),
                 "--config", str(cfg), *flags, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err.startswith(f"error: {str(cfg) if source == 'CONFIG' else source}: backbone: "
                          f"layers: tf_efficientnet_lite0: layer indices [9] out of range 0..")
    assert not (root / "model").exists()


def test_the_library_error_for_missing_layers_names_the_key_and_its_type():
    from anomaly_inspect.features.backbone import LayerRangeError
    from anomaly_inspect.pipeline import build_backbone

    cfg = ModelConfig()
    cfg.backbone.layers, cfg.backbone.weights = [2, 9], "random"
    with pytest.raises(LayerRangeError, match=r"^backbone: layers: tf_efficientnet_lite0: layer "
                                              r"indices \[9\] out of range 0\.\."):
        build_backbone(cfg)


def test_the_listed_keys_leave_out_seed_which_the_section_refuses():
    """A key the message lists must be one the section takes: a scorer's seed is the top-level one."""
    from anomaly_inspect.scorers import check_scorer_params

    with pytest.raises(ValueError) as info:
        check_scorer_params("patchcore", {"coreset_ration": 0.5})
    listed = str(info.value).split("accepted keys: ")[1]
    assert "coreset_ratio" in listed and "seed," not in listed and not listed.startswith("seed")
    assert listed.endswith("(seed: the top-level 'seed')")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_evaluate_lt_names_its_config_for_a_scorer_key_no_method_takes(tmp_path, capsys):
    path = tmp_path / "lt_knn.yaml"
    path.write_text("method: knn\nscorer: {k: 3}\n")
    assert main(["evaluate-lt", "--config", str(path), "--root", str(tmp_path / "missing"),
                 "--categories", "a,b", "--manifest-dir", str(tmp_path / "md")]) == 1
    assert _one_line(capsys) == (f"error: {path}: scorer: scorer settings ['k'] are not parameters "
                                 f"of any of ['patchcore', 'softpatch', 'tailedcore']")


def test_evaluate_lt_does_not_blame_its_config_for_a_flag_no_method_takes(tmp_path, capsys):
    path = tmp_path / "lt.yaml"
    path.write_text("scorer: {k: 3}\n")  # kNN's: refused for these methods, naming the file
    args = ["evaluate-lt", "--root", str(tmp_path / "missing"), "--categories", "a,b",
            "--methods", "patch_mahalanobis", "--manifest-dir", str(tmp_path / "md")]
    assert main([*args, "--coreset-ratio", "0.1", "--config", str(path)]) == 1
    assert _one_line(capsys).startswith(f"error: {path}: scorer: scorer settings ['k']")
    path.write_text("scorer: {}\n")
    assert main([*args, "--coreset-ratio", "0.1", "--config", str(path)]) == 1
    assert _one_line(capsys) == ("error: scorer settings ['coreset_ratio'] are not parameters "
                                 "of any of ['patch_mahalanobis']")
