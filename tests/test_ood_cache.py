"""ood-benchmark's feature cache defaults to the user cache's ``ood`` folder
(``$ANOMALY_INSPECT_CACHE/ood``, else ``~/.cache/anomaly_inspect/ood``), wherever the command
runs from; an explicit ``cache_dir`` in the config and ``--cache-dir`` still win."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import packaged_configs
from anomaly_inspect.evaluation import ood_benchmark
from anomaly_inspect.evaluation.ood_benchmark import OODBenchmarkConfig, load_ood_config

OOD_CONFIGS = [n for n in packaged_configs() if n.startswith("ood/")]


def _config(**extra) -> OODBenchmarkConfig:
    return OODBenchmarkConfig.from_dict({
        "benchmark": "mvtec_heldout", "splits": ["defects"], "scorers": ["nan"],
        "data": {"root": "data", "category": "tiny", "id_groups": ["good"],
                 "ood_groups": {"defects": ["scratch"]}}, **extra}, "c.yaml")


@pytest.mark.parametrize("name", OOD_CONFIGS)
def test_the_shipped_configs_cache_in_the_user_cache_wherever_they_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "user"))
    for cwd in (tmp_path, tmp_path / "elsewhere"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        assert load_ood_config(name).cache_folder() == tmp_path / "user" / "ood"


def test_the_default_cache_follows_the_environment_and_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANOMALY_INSPECT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for cfg in (_config(), _config(cache_dir=None)):  # absent, or null: the default
        assert cfg.cache_folder() == tmp_path / "home" / ".cache" / "anomaly_inspect" / "ood"
        monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "moved"))  # read when called
        assert cfg.cache_folder() == tmp_path / "moved" / "ood"
        monkeypatch.delenv("ANOMALY_INSPECT_CACHE")
    assert _config(cache_dir=str(tmp_path / "mine")).cache_folder() == tmp_path / "mine"
    assert _config(cache_dir="rel").cache_folder() == Path("rel")  # as given


def test_cache_dir_flag_wins_over_the_config_and_the_default(tmp_path, monkeypatch, capsys):
    seen = []

    def stop(cfg, data_root=None, progress=True):
        seen.append(cfg.cache_folder())
        raise ValueError("stop before any work")

    monkeypatch.setattr(ood_benchmark, "run_ood_benchmark", stop)
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "user"))
    config = tmp_path / "c.yaml"
    for text in ("", f"cache_dir: {tmp_path / 'from_yaml'}\n"):
        config.write_text("benchmark: mvtec_heldout\nsplits: [defects]\nscorers: [nan]\n"
                          "data: {root: data, category: tiny, id_groups: [good], "
                          "ood_groups: {defects: [scratch]}}\n" + text)
        for flag in ([], ["--cache-dir", str(tmp_path / "flag")]):
            assert main(["ood-benchmark", "--config", str(config), "--quiet", *flag]) == 1
    assert "stop before any work" in capsys.readouterr().err
    assert seen == [tmp_path / "user" / "ood", tmp_path / "flag",
                    tmp_path / "from_yaml", tmp_path / "flag"]


def test_a_run_without_cache_dir_writes_its_features_to_the_user_cache_only(tmp_path, monkeypatch):
    from anomaly_inspect.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "data", "tiny", n_train=6, n_test_good=2,
                            n_test_per_defect=2, image_size=64, defects=("scratch",)).parent
    monkeypatch.setenv("ANOMALY_INSPECT_CACHE", str(tmp_path / "user"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = OODBenchmarkConfig.from_dict({
        "benchmark": "mvtec_heldout", "splits": ["defects"], "scorers": ["nan"],
        "data": {"root": str(root), "category": "tiny", "id_groups": ["good"],
                 "ood_groups": {"defects": ["scratch"]}, "folds": 2},
        "backbone": {"weights": "random"}, "features": {"image_size": 64, "batch_size": 8}},
        "c.yaml")
    ood_benchmark.run_ood_benchmark(cfg, progress=False)
    assert list((tmp_path / "cwd").iterdir()) == []
    assert list((tmp_path / "user" / "ood").glob("*.npz"))
