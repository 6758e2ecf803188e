"""A packaged config may be named as the docs write it, from any folder: with a trailing
``.yaml`` / ``.yml`` and / or a leading ``configs/`` (the checkout's link to the packaged
configs); a file at that path still wins."""

from pathlib import Path

import pytest

from anomaly_inspect.config import CONFIG_DIR, ConfigError, load_config, resolve_config
from anomaly_inspect.evaluation.ood_benchmark import load_ood_config


@pytest.mark.parametrize("ref", ["ood/isic_all", "ood/isic_all.yaml", "ood/isic_all.yml",
                                 "configs/ood/isic_all", "configs/ood/isic_all.yaml",
                                 "./configs/ood/isic_all.yaml"])
def test_the_documented_spellings_name_the_packaged_config_outside_the_checkout(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config(ref) == CONFIG_DIR / "ood" / "isic_all.yaml"


def test_a_model_config_named_with_its_suffix_loads_as_by_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("patchcore.yaml") == load_config("configs/patchcore.yml") == load_config("patchcore")
    assert load_ood_config("configs/ood/isic_all.yaml").splits == load_ood_config("ood/isic_all").splits


def test_a_file_at_that_path_wins_over_the_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for ref in ("patchcore.yaml", "configs/ood/isic_all.yaml"):
        Path(ref).parent.mkdir(parents=True, exist_ok=True)
        Path(ref).write_text("seed: 7\n")
        assert resolve_config(ref) == Path(ref)
    assert load_config("patchcore.yaml").seed == 7


@pytest.mark.parametrize("ref", ["nope.yaml", "configs/nope", "ood/isic_all.json", "other/ood/isic_all.yaml",
                                 "configs/configs/patchcore.yaml"])
def test_other_names_are_still_refused(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"^{ref}: config file not found, and not a packaged config name"):
        resolve_config(ref)
