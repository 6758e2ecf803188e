"""The Python API as a library user meets it: one path given as a str / Path, arguments that
are no paths, fit's arguments checked before any work, the config a model keeps, YAML floats
and YAML errors.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.config import ConfigError, ModelConfig, load_config, read_yaml_mapping
from anomaly_inspect.data.folder import load_folders
from anomaly_inspect.scorers import get_scorer_class
from anomaly_inspect.screening import fit
from anomaly_inspect.screening import model as model_mod
from anomaly_inspect.screening.runner import screen
from layout_writer import rgb_image, write_image

HEAD_SCORERS = ["msp", "energy", "max_logit", "head_nan", "head_feature_norm", "l2norm", "line",
                "react", "dice", "vim", "odin", "odin_feature"]


def _cfg() -> ModelConfig:
    cfg = ModelConfig()
    cfg.backbone.weights = "random"
    cfg.features.image_size = 64
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root folder with train/ and new/, fitted model)."""
    root = tmp_path_factory.mktemp("api")
    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    for i in range(2):
        write_image(root / "new" / f"n{i}.png", rgb_image(48, seed=100 + i))
    return root, fit([root / "train"], _cfg(), calibration_fraction=0.25, progress=False)


@pytest.fixture()
def no_build(monkeypatch):
    """fit() fails loudly should it get as far as building the backbone."""
    def build(*args, **kwargs):
        raise AssertionError("fit built the backbone before refusing its arguments")

    monkeypatch.setattr(model_mod, "build", build)


# ---------------------------------------------------------------- one path, not its characters


def test_score_takes_one_path_as_a_str_or_a_path(tiny, monkeypatch):
    root, model = tiny
    monkeypatch.chdir(root)
    want = [r.score for r in model.score(["new/n0.png"])]
    assert [r.score for r in model.score("new/n0.png")] == want
    assert [r.score for r in model.score(Path("new/n0.png"))] == want
    assert [r.score for r in model.score(str(root / "new" / "n0.png"))] == want
    assert len(model.score("new")) == 2  # one folder
    rows = [r for b in model.iter_score(str(root / "new" / "n1.png")) for r in b.images]
    assert len(rows) == 1 and not rows[0].error


def test_screen_takes_one_folder_as_a_str(tiny, tmp_path):
    root, model = tiny
    s = screen(model, str(root / "new"), tmp_path / "out", progress=False, report=False,
               overlays="none")
    assert s.n_inputs == 2 and s.n_scored == 2


def test_fit_takes_one_training_and_one_calibration_folder(tiny, monkeypatch):
    root, _ = tiny
    monkeypatch.chdir(root)
    m = fit("train", _cfg(), calibration=Path("new"), progress=False)
    assert len(m.info.train_images) == 8 and len(m.info.calibration_images) == 2


def test_load_folders_takes_one_folder_per_argument(tiny):
    root, _ = tiny
    ds = load_folders(str(root / "train"), test_normal_dirs=root / "new")
    assert len(ds.train) == 8 and len(ds.test) == 2


@pytest.mark.parametrize("bad", [
    Image.new("RGB", (8, 8)), np.zeros((8, 8, 3), np.uint8), b"new/n0.png", {"a": 1},
    [Image.new("RGB", (8, 8))], [np.zeros((8, 8, 3), np.uint8)], 3,
], ids=["pil", "ndarray", "bytes", "dict", "pil-list", "ndarray-list", "int"])
def test_what_is_no_path_is_refused_naming_the_argument(tiny, tmp_path, bad, no_build):
    _, model = tiny
    accepts = r"expected paths of images or folders \(a str or os\.PathLike, or a list of them\)"
    with pytest.raises(TypeError, match=rf"^inputs: {accepts}, got ") as err:
        model.score(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match=rf"^paths: {accepts}"):
        model.iter_score(bad)
    with pytest.raises(TypeError, match=rf"^inputs: {accepts}"):
        screen(model, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match=rf"^train: {accepts}"):
        fit(bad, _cfg())
    with pytest.raises(TypeError, match=rf"^calibration: {accepts}"):
        fit([tmp_path], _cfg(), calibration=bad)
    with pytest.raises(TypeError, match=rf"^test_anomalous_dirs: {accepts}"):
        load_folders([tmp_path], test_anomalous_dirs=bad)
    with pytest.raises(TypeError, match=r"^image: expected the path of one image"):
        model.explain(bad)


def test_explain_takes_one_path_and_says_so_for_a_list(tiny):
    _, model = tiny
    with pytest.raises(TypeError, match=r"^image: expected the path of one image .* got a list; "
                                        r"explain one image per call"):
        model.explain(["x.png"])


# ---------------------------------------------------------------- fit's arguments, before any work


@pytest.mark.parametrize("fpr", [0, 1, -0.1, 1.5, "0.05", None, float("nan")])
def test_fit_refuses_a_bad_target_fpr_before_any_work(tiny, fpr, no_build):
    root, _ = tiny
    with pytest.raises(ValueError, match=r"target_fpr must be a number in \(0, 1\), got "):
        fit([root / "train"], _cfg(), target_fpr=fpr, progress=False)


@pytest.mark.parametrize("cfg", ["patchcore", {"method": "knn"}, Path("patchcore.yaml")])
def test_fit_refuses_a_cfg_that_is_no_model_config(tiny, cfg, no_build):
    root, _ = tiny
    with pytest.raises(TypeError, match=r"^cfg: expected a ModelConfig \(read a YAML file or a "
                                        r"packaged config with load_config\(\.\.\.\)\), got "):
        fit([root / "train"], cfg, progress=False)


def test_a_class_conditional_mahalanobis_needs_labels_and_is_refused_before_any_work(tiny,
                                                                                     no_build):
    root, _ = tiny
    cfg = _cfg()
    cfg.method, cfg.scorer = "mahalanobis", {"class_conditional": True}
    with pytest.raises(ConfigError, match=r"^config: method 'mahalanobis' with these settings "
                                          r"fits on ID class labels"):
        fit([root / "train"], cfg, progress=False)
    cfg.scorer = {}
    assert not cfg.check_scorer().needs_labels


def test_label_scorers_say_so_and_only_they():
    for name in HEAD_SCORERS:
        assert get_scorer_class(name).needs_labels, name
    for name in ("patchcore", "knn", "mahalanobis", "feature_norm"):
        assert not get_scorer_class(name).needs_labels, name


@pytest.mark.parametrize("method", HEAD_SCORERS)
def test_fit_refuses_a_label_scorer_before_building_the_backbone(tiny, method, no_build):
    root, _ = tiny
    cfg = _cfg()
    cfg.method = method
    with pytest.raises(ConfigError, match=rf"^config: method '{method}' with these settings fits "
                                          r"on ID class labels, which fitting a model never has"):
        fit([root / "train"], cfg, progress=False)


def test_the_cli_refuses_a_label_scorer_before_building_the_backbone(tiny, tmp_path, no_build,
                                                                      capsys):
    root, _ = tiny
    assert main(["fit", "--train", str(root / "train"), "--out", str(tmp_path / "m"),
                 "--method", "msp", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --method msp: method 'msp' with these settings fits on ID "
                          "class labels")
    assert err.count("\n") == 1


def test_a_config_file_naming_a_label_scorer_is_refused_when_read(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: energy\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{f}: method 'energy' with these settings fits on ID"):
        load_config(f)


# ---------------------------------------------------------------- the config a model keeps


def test_the_model_keeps_its_own_copy_of_the_config(tiny):
    root, _ = tiny
    cfg = _cfg()
    model = fit([root / "train"], cfg, calibration_fraction=0.25, progress=False)
    before = copy.deepcopy(model.cfg)
    assert model.cfg is not cfg and model.cfg == cfg
    cfg.method = "knn"
    cfg.features.image_size = 200
    assert model.cfg == before and model.cfg.method == "patchcore"
    assert model.cfg.features.image_size == 64


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
