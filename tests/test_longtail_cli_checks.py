"""evaluate-lt refuses, before any work, what it would ignore or misuse: a config's ``features:
views`` (every method it runs scores patches), a category name that is no single folder name
(it names the manifest file), a ``--manifest-dir`` that does not hold the ``--manifest``, and
a ``--root CATEGORY=DIR`` of a category not in ``--categories``."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.data.layout import resolve_category_dirs
from anomaly_inspect.data.longtail import manifest_name


def _fake_layout(root: Path, categories=("x", "y", "z")) -> Path:
    """Empty files in an MVTec layout (enough to resolve categories; never read as images)."""
    for c in categories:
        for sub in ("train/good", "test/good", "test/crack"):
            (root / c / sub).mkdir(parents=True)
            (root / c / sub / "000.png").write_bytes(b"")
    return root


@pytest.fixture
def no_dataset_read(monkeypatch):
    """Fail any run that gets as far as reading a category."""
    from anomaly_inspect.data import mvtec

    def read(*args, **kwargs):
        raise RuntimeError("a dataset was read")

    monkeypatch.setattr(mvtec, "load_mvtec", read)


def _refused(args: list[str], capsys) -> str:
    assert main(["evaluate-lt", *args]) == 1
    err = capsys.readouterr().err
    assert "a dataset was read" not in err, err
    return err


# -- 1: a config's features: views ----------------------------------------------------------
def test_config_views_are_refused_before_any_work(tmp_path, capsys, no_dataset_read):
    """The config's own method (pooled mahalanobis takes views) is not what evaluate-lt runs."""
    config = tmp_path / "views.yaml"
    config.write_text("method: mahalanobis\nfeatures: {views: rotflip}\n")
    root = _fake_layout(tmp_path / "r")
    err = _refused(["--root", str(root), "--categories", "x,y,z", "--methods", "patchcore",
                    "--config", str(config), "--manifest-dir", str(tmp_path / "m")], capsys)
    assert f"{config}: features: views 'rotflip'" in err and "patch features" in err, err
    assert not (tmp_path / "m").exists()


# -- 3: category names that are no single folder name -----------------------------------------
@pytest.mark.parametrize("bad", ["data1/x", "x/../../z", "..", ".", "x/"])
def test_category_names_with_a_path_are_refused(bad):
    from anomaly_inspect.data.longtail import check_category_names

    with pytest.raises(ValueError, match=rf"--categories: category '{bad}' is not one folder name"):
        check_category_names(["y", bad], "--categories")
    with pytest.raises(ValueError, match="is not one folder name"):  # nor written as a file name
        manifest_name("step", 4, 0.1, 0, ["y", bad])
    check_category_names(["y", "x.v2", "a..b"], "--categories")  # dots inside a name are fine


def test_evaluate_lt_refuses_a_category_with_a_path_before_any_work(tmp_path, capsys, no_dataset_read):
    _fake_layout(tmp_path / "data1")
    err = _refused(["--root", str(tmp_path), "--categories", "data1/x,data1/y",
                    "--manifest-dir", str(tmp_path / "m")], capsys)
    assert "--categories: category 'data1/x' is not one folder name" in err, err
    assert "CATEGORY=DIR" in err, err
    assert not (tmp_path / "m").exists()


# -- 4: options that would be ignored -----------------------------------------------------------
def test_manifest_dir_beside_a_manifest_is_refused(tmp_path, capsys, no_dataset_read):
    root = _fake_layout(tmp_path / "r")
    manifest = tmp_path / "lt.json"
    base = ["--root", str(root), "--categories", "x,y,z", "--manifest", str(manifest)]
    for flags in (["--manifest-dir", str(tmp_path / "elsewhere")], ["--manifest-dir", "datasets"]):
        err = _refused(base + flags, capsys)
        assert f"--manifest-dir {flags[1]}" in err and f"--manifest {manifest}" in err, err
        assert "leave one out" in err, err
    # without --manifest-dir, or with the folder holding the manifest, the run goes on to read
    # the (missing) manifest
    for flags in ([], ["--manifest-dir", str(tmp_path)]):
        assert main(["evaluate-lt", *base, *flags]) == 1
        err = capsys.readouterr().err
        assert "--manifest-dir" not in err and "a dataset was read" in err, err


def test_a_category_dir_of_an_unlisted_category_is_refused(tmp_path):
    root = _fake_layout(tmp_path / "r")
    with pytest.raises(ValueError, match=r"q=/nonexistent: category 'q' is not in the categories "
                                         r"asked for \(x, y\)"):
        resolve_category_dirs([str(root), "q=/nonexistent"], ["x", "y"])
    with pytest.raises(ValueError, match=r"category 'yy' is not in .*; did you mean 'y'\?"):
        resolve_category_dirs([str(root), f"yy={root / 'y'}"], ["x", "y"])
    assert resolve_category_dirs([str(root), f"y={root / 'z'}"], ["x", "y"]) == {
        "x": root / "x", "y": root / "z"}


def test_evaluate_lt_refuses_an_unlisted_category_dir_before_reading_data(tmp_path, capsys,
                                                                          no_dataset_read):
    root = _fake_layout(tmp_path / "r")
    err = _refused(["--root", str(root), "--root", "q=/nonexistent", "--categories", "x,y",
                    "--k", "2", "--manifest-dir", str(tmp_path / "m")], capsys)
    assert "q=/nonexistent: category 'q' is not in the categories" in err, err
