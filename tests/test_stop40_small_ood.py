"""ood-benchmark: nuisance_k without nuisance is refused (it changed nothing); --runtime,
--precision and --seed override the config."""

from __future__ import annotations

import pytest

from anomaly_inspect.config import ConfigError
from anomaly_inspect.evaluation.ood_benchmark import ScorerSpec, load_ood_config


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
