"""ood-benchmark configs: the backbone / features sections are checked as a model config's are
(sections, unknown keys, types, backbone name, layer range), each refusal one line naming the
file and key, before any work; nuisance_k without nuisance is refused; --runtime, --precision
and --seed override the config; the README names the scorers ``orient: pseudo_ood`` is refused
for."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import ConfigError
from anomaly_inspect.evaluation.ood_benchmark import (
    IN_SAMPLE_DEGENERATE,
    ScorerSpec,
    load_ood_config,
)

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


@pytest.mark.parametrize("text", ["seed: 2147483648", "synthetic: {seed: 2147483648}"])
def test_an_ood_config_seed_beyond_the_model_configs_bound_is_refused(tmp_path, text):
    """The benchmark's seeds reach the same consumers as a model's (faiss IVF takes 32 bits)."""
    path = tmp_path / "c.yaml"
    path.write_text(HEAD + text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"seed: must be below 2\*\*31"):
        load_ood_config(path)


# nuisance_k without nuisance is refused (it changed nothing); --runtime, --precision and --seed
# override the config.
@pytest.mark.parametrize("row, label", [("{name: mahalanobis, nuisance_k: 3}", "mahalanobis"),
                                        ("{name: knn, label: k5, nuisance_k: 5}", "k5")])
def test_nuisance_k_without_nuisance_is_refused_naming_the_row(tmp_path, row, label):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"benchmark: isic\ndata: {{}}\nsplits: [ink_all]\nscorers: [{row}]\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: scorer '{label}': nuisance_k needs nuisance "
                                          r"\(one of \['colour'\]\)"):
        load_ood_config(cfg)


def test_nuisance_k_defaults_to_5_with_nuisance_and_stays_unset_without():
    assert ScorerSpec("mahalanobis", nuisance="colour").nuisance_k == 5
    assert ScorerSpec("mahalanobis", nuisance="colour", nuisance_k=2).nuisance_k == 2
    assert ScorerSpec("mahalanobis").nuisance_k is None


def _command_config(tmp_path, monkeypatch, flags: list[str], text: str = "scorers: [nan]\n"):
    """The configs ood-benchmark runs with ``flags`` (the run itself replaced) and its exit code."""
    from anomaly_inspect.cli import main
    from anomaly_inspect.evaluation import ood_benchmark

    ran = []
    report = {"table": "t", "convention": "c", "synthetic": None, "orientation": {},
              "timings_s": {"total": 0, "features": 0, "images_extracted": 0}, "peak_rss_mb": 0}
    monkeypatch.setattr(ood_benchmark, "run_ood_benchmark",
                        lambda cfg, root, progress: ran.append(cfg) or report)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("benchmark: isic\ndata: {root: r}\nsplits: [ink_all]\nseed: 2\n"
                   "backbone: {runtime: torch, weights: random}\n" + text)
    rc = main(["ood-benchmark", "--config", str(cfg), "--quiet", *flags])
    return rc, ran


def test_runtime_precision_and_seed_flags_override_the_config(tmp_path, monkeypatch):
    rc, ran = _command_config(tmp_path, monkeypatch, ["--runtime", "onnxruntime", "--seed", "7"])
    assert rc == 0
    cfg = ran[0]
    assert (cfg.backbone.runtime, cfg.backbone.precision, cfg.seed) == ("onnxruntime", "f32", 7)
    assert cfg.backbone.weights == "random"  # the file's other backbone keys stay
    # the JSON's "config" names the flags beside the file (its backbone and seed: what ran)
    assert cfg.source == f"{tmp_path / 'c.yaml'} with --runtime onnxruntime --seed 7"


def test_without_flags_the_config_decides(tmp_path, monkeypatch):
    rc, ran = _command_config(tmp_path, monkeypatch, [])
    assert rc == 0
    assert (ran[0].backbone.runtime, ran[0].seed, ran[0].source) == ("torch", 2, str(tmp_path / "c.yaml"))


def test_a_flag_that_does_not_fit_the_config_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    rc, ran = _command_config(tmp_path, monkeypatch, ["--runtime", "onnxruntime", "--precision", "int8"],
                              "scorers: [odin]\n")
    assert rc == 1 and not ran
    assert (f"{tmp_path / 'c.yaml'} with --runtime onnxruntime --precision int8: scorers with input "
            "'pixels' (odin) need backbone precision f32, got 'int8'") in capsys.readouterr().err


# The README's orient: pseudo_ood bullet names the scorers the config refuses it for.
README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_names_the_scorers_pseudo_ood_is_refused_for():
    text = README.read_text(encoding="utf-8")
    start = text.index("- `orient: pseudo_ood` on any")
    bullet = text[start:text.index("\n- ", start + 1)]
    assert all(f"`{name}`" in bullet for name in IN_SAMPLE_DEGENERATE), bullet


@pytest.mark.parametrize("value", ["false", "''", "[]"])
def test_a_backbone_that_is_no_mapping_is_refused_with_runtime_flags_too(tmp_path, value):
    """--runtime / --precision merge into the backbone section; one that is no mapping was
    replaced by the flags' values instead of refused."""
    path = tmp_path / "o.yaml"
    path.write_text(HEAD + f"backbone: {value}\n")
    with pytest.raises(ConfigError, match=r"backbone: expected a mapping, got "):
        load_ood_config(path, backbone={"runtime": "torch"})
