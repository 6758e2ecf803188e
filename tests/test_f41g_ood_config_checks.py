"""From a config review: an ood-benchmark config's backbone / features sections are checked as a
model config's are (sections, unknown keys, types, backbone name, layer range), each refusal one
line naming the file and key, before any work; evaluate-lt names its config when the config's
scorer section holds a key none of its methods takes."""

from __future__ import annotations

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ConfigError
from anomaly_inspect.evaluation.ood_benchmark import load_ood_config

HEAD = "benchmark: isic\ndata: {root: r}\nsplits: [ink_all]\nscorers: [feature_norm]\n"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize(("section", "message"), [
    ("features: {image_size: 256, imagesize: 3}",
     "features: unknown key 'imagesize'; accepted keys: aggregate, batch_size, crop_size"),
    ("backbone: {name: resnet18, foo: 1}", "backbone: unknown key 'foo'; accepted keys: layers, name"),
    ("backbone: resnet18", "backbone: expected a mapping, got 'resnet18'"),
    ("features: [1]", "features: expected a mapping, got [1]"),
    ("backbone: {layers: 3}", "backbone: layers: expected a list of integers or null, got 3"),
])
def test_ood_config_sections_are_checked_as_a_model_configs(tmp_path, section, message):
    path = tmp_path / "o.yaml"
    path.write_text(HEAD + section + "\n")
    with pytest.raises(ConfigError) as info:
        load_ood_config(path)
    assert str(info.value).startswith(f"{path}: {message}"), info.value


@pytest.mark.parametrize(("backbone", "message"), [
    ("{layers: [2, 99]}", "backbone: layers: tf_efficientnet_lite0: layer indices [99] out of range 0..4"),
    ("{name: notamodel}", "backbone: name: unknown backbone 'notamodel': not a timm model name"),
])
def test_ood_benchmark_refuses_the_backbones_layers_and_name_before_any_work(tmp_path, capsys,
                                                                              backbone, message):
    """The data root does not exist: reaching it would be another error."""
    path = tmp_path / "o.yaml"
    path.write_text(HEAD + f"backbone: {backbone}\n")
    assert main(["ood-benchmark", "--config", str(path), "--data-root", str(tmp_path / "missing"),
                 "--cache-dir", str(tmp_path / "cache")]) == 1
    assert _one_line(capsys).startswith(f"error: {path}: {message}")
    assert not (tmp_path / "cache").exists()


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


@pytest.mark.parametrize("text", ["seed: 2147483648", "synthetic: {seed: 2147483648}"])
def test_an_ood_config_seed_beyond_the_model_configs_bound_is_refused(tmp_path, text):
    """The benchmark's seeds reach the same consumers as a model's (faiss IVF takes 32 bits)."""
    path = tmp_path / "c.yaml"
    path.write_text(HEAD + text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"seed: must be below 2\*\*31"):
        load_ood_config(path)
