"""Packaging: the wheel ships the configs; configs are found by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.config import (
    CONFIG_DIR,
    ConfigError,
    load_config,
    packaged_configs,
    resolve_config,
)
from anomaly_inspect.evaluation.ood_benchmark import load_ood_config

REPO = Path(__file__).resolve().parents[1]


def test_repo_configs_is_a_link_to_the_packaged_configs():
    link = REPO / "configs"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == CONFIG_DIR


def test_named_configs_resolve_to_the_packaged_files():
    names = packaged_configs()
    assert {"patchcore", "longtail_first_embedding", "ood/isic_all"} <= set(names)
    assert resolve_config("patchcore") == CONFIG_DIR / "patchcore.yaml"
    assert load_config("patchcore") == load_config(REPO / "configs" / "patchcore.yaml")
    assert load_ood_config("ood/isic_all").splits == load_ood_config(
        REPO / "configs" / "ood" / "isic_all.yaml").splits


def test_a_file_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("patchcore").write_text("seed: 7\n")
    assert load_config("patchcore").seed == 7


def test_unknown_name_lists_the_available_names(capsys):
    with pytest.raises(ConfigError, match=r"nope: config file not found.*available: .*ood/isic_all"):
        load_config("nope")
    assert main(["ood-benchmark", "--config", "nope", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: nope: config file not found") and "patchcore" in err
    assert "\n" not in err


def test_wheel_ships_configs_and_cli_but_no_source_root_init(tmp_path):
    src = tmp_path / "src"  # a clean copy: no stale build/ or egg-info from the checkout
    shutil.copytree(REPO / "inspect", src / "inspect",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("anomaly_inspect-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"anomaly_inspect/configs/{n}.yaml" for n in packaged_configs()}
    assert expected <= names
    assert "anomaly_inspect/configs/ood/isic_all.yaml" in names
    assert {"anomaly_inspect/cli.py", "anomaly_inspect/py.typed"} <= names
    assert "anomaly_inspect/screening/html_report.py" in names
    assert not [n for n in names if n.startswith("inspect/") or n == "__init__.py"]
