"""Command-line options: a flag that does nothing where it is given is refused, a flag that
does not fit the config is refused naming both, and library phrases become flags only where
they are phrases (never inside a path)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from anomaly_inspect.cli import build_parser, main, with_flag_hints
from anomaly_inspect.commands.common import model_config_from_args
from anomaly_inspect.config import ConfigError, ModelConfig, load_config
from anomaly_inspect.features.backbone import LayerRangeError
from anomaly_inspect.tuning.candidates import Candidate


def _config(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _cfg(*argv: str) -> ModelConfig:
    return model_config_from_args(build_parser().parse_args(["evaluate", *argv]))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# ---------------------------------------------------------------- library phrases -> flags


@pytest.mark.parametrize("message, expect", [
    ("/tmp/my_out_dir/model: already exists; pass overwrite=True to replace it",
     "/tmp/my_out_dir/model: already exists; pass --overwrite to replace it"),
    ("/tmp/out_dir/m, out_dir/m, out_dir.json, my-out_dir, x.out_dir, out_dir: stay",
     "/tmp/out_dir/m, out_dir/m, out_dir.json, my-out_dir, x.out_dir, out_dir: stay"),
    ("results.csv has other columns; choose another out_dir or pass rescore=True",
     "results.csv has other columns; choose another --out or pass --rescore"),
    ("(max_images=300 of 500 images)", "(--max-tune-images 300 of 500 images)"),
    ("pass weights=FILE or weights='random'.", "pass --weights FILE or --weights random."),
])
def test_flag_hints_replace_phrases_not_parts_of_paths(message, expect):
    assert with_flag_hints(message) == expect


def test_a_path_containing_a_parameter_name_is_printed_as_given(tmp_path, capsys):
    out = tmp_path / "my_out_dir"
    out.mkdir()
    (out / "model.json").write_text('{"format_version": 1}')  # a model: --overwrite replaces it
    train = tmp_path / "train"
    train.mkdir()
    assert main(["fit", "--train", str(train), "--out", str(out), "--quiet"]) == 1
    err = _one_line_error(capsys)
    assert f"error: {out}: " in err and "pass --overwrite" in err  # not .../my_--out


# ---------------------------------------------------------------- config sections


@pytest.mark.parametrize("text, message", [
    ("backbone: {layers: []}", "backbone: layers must not be empty"),
    ("backbone: {layers: [2, 2]}", "backbone: layers must be increasing indices without repeats "
                                   "(shallow to deep), got [2, 2]"),
    ("backbone: {layers: [3, 2]}", "backbone: layers must be increasing indices without repeats "
                                   "(shallow to deep), got [3, 2]"),
    ("features: {finest_stage: bogus}",
     "features: finest_stage must be one of ('mean', 'rows', 'full'), got 'bogus'"),
    ("features: {aggregate: 2}", "features: aggregate must be an odd number >= 1"),
    ("scorer: {coreset_ratoi: 0.01}", "scorer settings ['coreset_ratoi'] are not parameters of any method"),
])
def test_config_errors_name_the_file_when_it_is_read(tmp_path, text, message):
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_increasing_layers_load():
    assert ModelConfig.from_dict({"backbone": {"layers": [1, 3]}}).backbone.layers == [1, 3]
    assert ModelConfig.from_dict({"backbone": {"layers": None}}).backbone.layers is None


def test_a_key_of_another_method_loads_but_the_command_refuses_it_naming_the_file(tmp_path):
    """Without ``method:`` the section may be meant for evaluate-lt's methods (soft_weight:
    SoftPatch): read; a command fitting PatchCore refuses it naming the file."""
    path = _config(tmp_path, "scorer: {soft_weight: true}")
    assert load_config(path).scorer == {"soft_weight": True}
    with pytest.raises(ConfigError, match=rf"^{path}: scorer: unknown key 'soft_weight' for "
                                          rf"method 'patchcore'"):
        _cfg("--config", str(path))
    assert _cfg("--config", str(path), "--method", "softpatch").scorer == {"soft_weight": True}


def test_method_keeps_the_scorer_keys_it_takes_and_refuses_the_others(tmp_path):
    path = _config(tmp_path, "method: patchcore\nscorer: {coreset_ratio: 0.01, num_neighbors: 3}")
    cfg = _cfg("--config", str(path), "--method", "softpatch")
    assert (cfg.method, cfg.scorer) == ("softpatch", {"coreset_ratio": 0.01, "num_neighbors": 3})
    with pytest.raises(ConfigError) as info:
        _cfg("--config", str(path), "--method", "mahalanobis")
    assert str(info.value).startswith(
        f"{path} with --method mahalanobis: scorer: unknown keys 'coreset_ratio', 'num_neighbors' "
        f"for method 'mahalanobis'; accepted keys: class_conditional, shrinkage")
    with pytest.raises(ConfigError, match=r"^--method bogus: unknown method 'bogus'"):
        _cfg("--method", "bogus")


def test_image_size_below_the_configs_crop_is_refused_naming_both(tmp_path):
    path = _config(tmp_path, "features: {crop_size: 300}")
    with pytest.raises(ConfigError) as info:
        _cfg("--config", str(path), "--image-size", "256")
    assert str(info.value) == (f"{path} with --image-size 256: features: crop_size (300) must "
                               f"not exceed image_size (256)")
    cfg = _cfg("--config", str(path), "--image-size", "320", "--batch-size", "4")
    assert (cfg.features.image_size, cfg.features.crop_size, cfg.features.batch_size) == (320, 300, 4)


def test_layers_flag_with_a_repeat_is_refused_naming_it(capsys):
    assert main(["evaluate", "--dataset", "folder", "--train-dir", "/nonexistent",
                 "--layers", "2,2"]) == 1
    assert _one_line_error(capsys) == ("error: --layers 2,2: backbone: layers must be increasing "
                                       "indices without repeats (shallow to deep), got [2, 2]")


def test_the_source_names_each_given_model_flag_in_the_order_of_help(tmp_path):
    path = _config(tmp_path, "features: {crop_size: 300}")
    with pytest.raises(ConfigError) as info:
        _cfg("--seed", "0", "--image-size", "256", "--layers", "1,2", "--precision", "f32",
             "--config", str(path))
    assert str(info.value).startswith(f"{path} with --layers 1,2 --precision f32 "
                                      f"--image-size 256 --seed 0: features: crop_size (300)")


def test_flags_override_the_config_as_before(tmp_path):
    path = _config(tmp_path, "backbone: {name: tf_efficientnet_lite0, layers: [1, 2]}\nseed: 3")
    cfg = _cfg("--config", str(path), "--backbone", "tf_efficientnet_lite2", "--runtime", "torch",
               "--resize", "pad", "--seed", "5")
    assert (cfg.backbone.name, cfg.backbone.layers, cfg.backbone.runtime) == ("tf_efficientnet_lite2", None, "torch")
    assert (cfg.features.resize, cfg.seed) == ("pad", 5)
    assert _cfg("--config", str(path), "--layers", "2,3").backbone.layers == [2, 3]


def test_another_backbone_drops_the_configs_weights_file_as_a_tuning_candidate_does(tmp_path):
    """A lite0 checkpoint kept with ``--backbone tf_efficientnet_lite1`` failed at load ('296
    tensors, but the model has 386'): the file is the config's backbone's, like its layers."""
    from anomaly_inspect.tuning.candidates import Candidate

    ckpt = tmp_path / "lite0.pth"
    ckpt.write_bytes(b"x")
    path = _config(tmp_path, f"backbone: {{name: tf_efficientnet_lite0, weights: {ckpt}}}")
    lite1 = ("--config", str(path), "--backbone", "tf_efficientnet_lite1")
    assert _cfg(*lite1).backbone.weights is None  # the default weights of lite1
    assert _cfg(*lite1, "--weights", "random").backbone.weights == "random"
    assert _cfg("--config", str(path), "--backbone", "tf_efficientnet_lite0").backbone.weights == str(ckpt)
    base = _cfg("--config", str(path))
    assert Candidate.parse("lite1-320-8+16-rows-stretch").config(base).backbone.weights is None
    random = _config(tmp_path, "backbone: {name: tf_efficientnet_lite0, weights: random}", "r.yaml")
    assert _cfg("--config", str(random), *lite1[2:]).backbone.weights == "random"  # no file


@pytest.mark.parametrize("command, tunes", [("tune", True), ("fit", True), ("evaluate", True),
                                            ("demo", False), ("export", False)])
def test_seed_help_says_tuning_validation_keeps_seed_0(command, tunes):
    """--seed never reseeded tuning's image subset, folds or synthetic anomalies (seed 0, on
    which recorded tuning results depend), yet its help said only 'random seed'."""
    from anomaly_inspect.commands.common import add_model_args, options_of

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    help_text = next(a.help for a in sub._actions if a.dest == "seed")
    assert help_text.startswith("random seed (default 0)")
    assert ("tuning's image subset, folds and synthetic anomalies always use seed 0" in help_text) is tunes
    assert options_of(add_model_args)["seed"].default is None  # given or not: read as before


# ---------------------------------------------------------------- the flags given (from argparse)


def _toy_options(p):
    p.add_argument("--count", type=int)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--no-cache", dest="cache", action="store_false")
    p.add_argument("--level", type=int, default=7)


@pytest.mark.parametrize("argv, given", [
    ([], {}),
    (["--count", "0"], {"--count": 0}),  # a false value given counts
    (["-v", "--no-cache"], {"--verbose": True, "--no-cache": False}),  # long form, own flag
    (["--level", "1000", "--count", "2"], {"--count": 2, "--level": 1000}),  # the order of help
])
def test_given_options_are_read_from_the_parsers_actions(argv, given):
    import argparse

    from anomaly_inspect.commands.common import given_flags, given_options

    p = argparse.ArgumentParser()
    _toy_options(p)
    args = p.parse_args(argv)
    assert given_options(args, _toy_options) == given
    assert given_flags(args, _toy_options) == list(given)
    assert given_flags(args, _toy_options, only=("cache", "count")) == [
        f for f in ("--no-cache", "--count") if f in given]
    assert given_flags(args, _toy_options, but=("count",)) == [f for f in given if f != "--count"]


@pytest.mark.parametrize("argv, positional", [
    (["bench-coreset"], set()),
    # and the model options export does not offer, read as not given (None)
    (["export", "--out", "x"], {"model_dir", "method", "runtime", "precision", "resize",
                                "batch_size"})])
def test_the_options_read_for_refusals_are_the_commands_own(argv, positional):
    """``given_flags`` reads the function that builds the command's parser, so every option of
    the command (and no other) has its flag there: nothing to keep in step by hand."""
    import importlib

    from anomaly_inspect.commands.common import options_of

    module = importlib.import_module(f"anomaly_inspect.commands.{argv[0].replace('-', '_')}")
    options = options_of(module.add_arguments)
    dests = set(vars(build_parser().parse_args(argv))) - {"command", "func"}
    assert dests == set(options) | positional
    assert max(options["image_size"].option_strings, key=len) == "--image-size"


# ---------------------------------------------------------------- tuning options need --auto


@pytest.mark.parametrize("command", ["evaluate", "fit"])
@pytest.mark.parametrize("option", [["--ensemble", "2"], ["--grid", "full"], ["--candidates", "x"],
                                    ["--folds", "4"], ["--max-tune-images", "10"],
                                    ["--tune-cache", "/tmp/c"], ["--ensemble", "0"]])
def test_tuning_options_without_auto_are_refused(tmp_path, capsys, command, option):
    head = {"evaluate": ["evaluate", "--dataset", "folder", "--train-dir", str(tmp_path)],
            "fit": ["fit", "--train", str(tmp_path), "--out", str(tmp_path / "m")]}[command]
    assert main([*head, *option, "--quiet"]) == 1
    assert _one_line_error(capsys) == f"error: {option[0]}: tuning option, used only with --auto"
    assert not (tmp_path / "m").exists()


def test_tune_settings_take_the_given_options_and_the_defaults_otherwise():
    from anomaly_inspect.commands.tune import settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args(["tune", *argv]))

    s = settings()
    assert (s.n_folds, s.max_images, s.grid, s.ensemble) == (3, 300, "compact", 3)
    s = settings("--folds", "4", "--max-tune-images", "10", "--grid", "ascent", "--ensemble", "2")
    assert (s.n_folds, s.max_images, s.grid, s.ensemble) == (4, 10, "ascent", 2)
    assert settings("--ensemble", "0").ensemble == 3  # evaluate's "no fusion"


def test_ensemble_is_refused_where_nothing_is_fused(tmp_path, capsys):
    """fit --auto saves one model, so --ensemble would only be recorded, not used; tune's ensemble
    is the size of the one it validates, so 0 is not 'no fusion' there."""
    assert main(["fit", "--auto", "--ensemble", "2", "--train", str(tmp_path), "--out",
                 str(tmp_path / "m"), "--quiet"]) == 1
    assert _one_line_error(capsys) == ("error: --ensemble: fit saves one model (the chosen "
                                       "configuration); fusion is evaluate --auto's")
    assert not (tmp_path / "m").exists()
    assert main(["tune", "--train", str(tmp_path), "--ensemble", "0", "--quiet"]) == 1
    assert _one_line_error(capsys) == ("error: tune --ensemble: the size of the validated "
                                       "ensemble, at least 1 (default 3)")


def test_several_tuning_options_are_named_together(tmp_path, capsys):
    assert main(["evaluate", "--dataset", "folder", "--train-dir", str(tmp_path), "--grid", "full",
                 "--folds", "4"]) == 1
    assert _one_line_error(capsys) == "error: --grid, --folds: tuning options, used only with --auto"


# ---------------------------------------------------------------- bench-coreset / bench-scale


def test_stream_images_refuses_the_options_it_does_not_use(capsys):
    start = time.perf_counter()
    assert main(["bench-coreset", "--stream-images", "20", "--backbone", "no_such_net",
                 "--ratios", "7", "--variants", "bogus", "--root", "/nonexistent", "--seed", "0",
                 "--no-shared-storage"]) == 1
    assert _one_line_error(capsys) == (
        "error: --stream-images (random features) does not take --root, --ratios, --variants, "
        "--backbone, --seed, --no-shared-storage")
    assert time.perf_counter() - start < 5  # refused before any fit process starts


def test_stream_images_names_every_option_of_the_feature_benchmark_in_the_order_of_help(capsys):
    assert main(["bench-coreset", "--stream-images", "20", "--max-bank-items", "5", "--quiet",
                 "--no-shared-storage", "--workers", "2", "--address", "auto", "--engine", "ray",
                 "--seed", "1", "--batch-size", "2", "--resize", "pad", "--image-size", "64",
                 "--precision", "f32", "--runtime", "torch", "--layers", "1,2", "--weights", "random",
                 "--backbone", "b", "--method", "knn", "--config", "patchcore", "--radius-sample", "3",
                 "--engine-only", "--variants", "exact", "--ratios", "0.1", "--category", "c",
                 "--root", "r"]) == 1
    assert _one_line_error(capsys) == (
        "error: --stream-images (random features) does not take --root, --category, --ratios, "
        "--variants, --engine-only, --radius-sample, --config, --method, --backbone, --weights, "
        "--layers, --runtime, --precision, --image-size, --resize, --batch-size, --seed, "
        "--engine, --address, --workers, --no-shared-storage")


def test_engine_only_names_both_coreset_options(capsys):
    assert main(["bench-coreset", "--root", "r", "--category", "c", "--engine-only",
                 "--variants", "exact", "--ratios", "0.1"]) == 1
    assert _one_line_error(capsys) == ("error: --engine-only (the config's own coreset) does not "
                                       "take --ratios, --variants")


@pytest.mark.parametrize("argv, message", [
    (["--root", "r", "--category", "c", "--radius-sample", "5"],
     "--radius-sample applies to --engine-only only"),
    (["--root", "r", "--category", "c", "--max-bank-items", "5"],
     "--max-bank-items applies to --stream-images only"),
    (["--root", "r", "--category", "c", "--engine-only", "--ratios", "0.1"],
     "--engine-only (the config's own coreset) does not take --ratios"),
    (["--category", "c"], "--root and --category are required (or --stream-images)"),
])
def test_bench_coreset_refuses_options_of_another_benchmark(capsys, argv, message):
    assert main(["bench-coreset", *argv]) == 1
    assert _one_line_error(capsys) == f"error: {message}"


def test_bench_coreset_accepts_the_options_of_each_benchmark():
    from anomaly_inspect.commands.bench_coreset import check_options

    for argv in (["--stream-images", "20,40", "--max-bank-items", "5", "--quiet"],
                 ["--root", "r", "--category", "c", "--engine-only", "--radius-sample", "5",
                  "--engine", "ray", "--workers", "2", "--config", "patchcore"],
                 ["--root", "r", "--category", "c", "--ratios", "0.1", "--variants", "exact"]):
        args = build_parser().parse_args(["bench-coreset", *argv])
        check_options(args)  # raises where refused
    assert args.stream_images is None and args.engine is None
    assert build_parser().parse_args(["bench-coreset", "--stream-images", "20,40"]).stream_images == [20, 40]


@pytest.mark.parametrize("command", [["bench-coreset", "--stream-images"],
                                     ["bench-scale", "m", "x", "--workers"]])
@pytest.mark.parametrize("value", ["a,0", "0", "2,", "-1"])
def test_lists_of_counts_are_checked_when_parsed(capsys, command, value):
    with pytest.raises(SystemExit) as exc:
        main([*command, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert f"argument {command[-1]}: must be comma-separated positive integers (e.g. 1,2), got {value!r}" in err


def test_bench_scale_quiet_prints_the_rows_once_at_the_end(tmp_path, monkeypatch, capsys):
    import anomaly_inspect.pipeline.ray_engine as ray_engine
    import anomaly_inspect.screening.scale_bench as scale_bench

    (tmp_path / "a.png").write_bytes(b"")  # an image path; bench_scale is replaced below
    seen = {}

    def fake(model_dir, paths, configs, work_dir, rounds, progress, batch_size):
        seen.update(progress=progress, configs=configs)
        if progress:
            print("as it runs")
        return [{"engine": e, "workers": w, "round": 0, "images": 2, "overall_img_s": 1.0,
                 "steady_img_s": 1.0, "startup_s": 0.0, "init_s": 0.0, "driver_peak_rss_mb": 1,
                 "worker_peak_rss_mb": 1, "load_before": 0.0, "load_after": 0.0} for e, w in configs]

    from anomaly_inspect.features.extractor import Features
    from anomaly_inspect.scorers.patchcore import PatchCore
    from anomaly_inspect.screening.model_dir import ModelInfo, save_model_dir

    scorer = PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(patches=np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)))
    info = ModelInfo(config={}, backbone={}, calibration={}, train_images=[],
                     calibration_images=[])
    model = save_model_dir(tmp_path / "m", info, scorer)  # bench-scale checks it before any run
    monkeypatch.setattr(ray_engine, "import_ray", lambda: None)
    monkeypatch.setattr(scale_bench, "bench_scale", fake)
    argv = ["bench-scale", str(model), str(tmp_path / "a.png"), "--workers", "1,3"]
    assert main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert seen == {"progress": False, "configs": [("local", None), ("ray", 1), ("ray", 3)]}
    assert [line.split()[:2] for line in out] == [["local", "2"], ["ray", "x1"], ["ray", "x3"]]
    assert main(argv) == 0
    assert seen["progress"] is True and capsys.readouterr().out == "as it runs\n"


# ---------------------------------------------------------------- export's refusals


@pytest.mark.parametrize("argv, message", [
    (["no_such_model", "--seed", "0", "--image-size", "64", "--layers", "1,2", "--weights",
      "random", "--backbone", "b", "--config", "patchcore", "--pooled", "--quiet", "--overwrite",
      "--format", "onnx"],
     "--pooled --config --backbone --weights --layers --image-size --seed: not used with "
     "MODEL_DIR (a saved model brings its own settings); drop them, or drop MODEL_DIR to export "
     "a backbone alone"),
])
def test_export_names_the_options_it_does_not_use(tmp_path, capsys, argv, message):
    assert main(["export", "--out", str(tmp_path / "b.onnx"), *argv]) == 1
    assert _one_line_error(capsys) == f"error: {message}"
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("flags", [["--runtime", "onnxruntime"], ["--precision", "f32"],
                                   ["--method", "knn"], ["--resize", "pad"], ["--batch-size", "2"]])
def test_export_offers_no_option_it_cannot_use(tmp_path, capsys, flags):
    """The backbone alone is always its f32 ONNX graph (dynamic batch, resized input, no
    scorer) and a saved model brings its own settings: neither form takes these."""
    assert all(f"  {flags[0]}" not in line for line in _export_help(capsys).splitlines())
    for argv in ([], ["some_model"]):
        with pytest.raises(SystemExit) as info:
            main(["export", *argv, "--out", str(tmp_path / "b.onnx"), *flags])
        assert info.value.code == 2
        assert f"unrecognized arguments: {flags[0]}" in capsys.readouterr().err
    assert not (tmp_path / "b.onnx").exists()


def _export_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    return capsys.readouterr().out


def test_other_commands_keep_every_model_option(capsys):
    for command in ("fit", "evaluate", "tune", "demo", "bench-coreset", "evaluate-lt"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for flag in ("--method", "--runtime", "--precision", "--resize", "--batch-size"):
            assert flag in text, (command, flag)


# ---------------------------------------------------------------- the coreset bar


class _Bar:
    """A stand-in for Progress that records its total at each update."""

    made: list[_Bar] = []

    def __init__(self, total, desc, unit="img", enabled=True):
        self.total, self.desc, self.done, self.seen = total, desc, 0, []
        _Bar.made.append(self)

    def update(self, n=1):
        self.done += n
        self.seen.append(self.total)

    def grow(self, n):
        self.total = (self.total or 0) + n

    def close(self):
        self.closed_at = self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("n_images, totals", [
    (10, [200, 225, 230]),  # 80 patches on the first 4 images: 20 each, so 200 for 10
    (12, [240, 270, 276]),  # two announced images never came: corrected to 230 at the end
])
def test_the_coreset_bar_has_a_total_estimated_from_the_images_so_far(monkeypatch, n_images, totals):
    import anomaly_inspect.scorers.patchcore as patchcore
    from anomaly_inspect.core import Features

    monkeypatch.setattr(patchcore, "Progress", _Bar)
    _Bar.made.clear()
    rng = np.random.default_rng(0)
    grown = []

    def batches():
        for n, on_image in ((4, 20), (4, 25), (2, 25)):  # 5x5 grid; the first batch padded
            valid = np.zeros((n, 5, 5), bool)
            valid.reshape(n, -1)[:, :on_image] = True
            yield Features(rng.standard_normal((n, 5, 5, 8), dtype=np.float32), valid=valid)
            grown.append(_Bar.made[0].total)  # after the coreset took the block

    patchcore.PatchCore(coreset_ratio=0.5, progress=True).fit_batches(batches(), n_images)
    bar = _Bar.made[0]
    assert bar.desc == "coreset" and grown == totals
    assert bar.done == bar.closed_at == 230  # 4 * 20 + 6 * 25 patches: 100 % at the end
    assert None not in bar.seen


# ---------------------------------------------------------------- demo's --output-json


def test_demo_output_json_may_go_beside_the_dataset_but_not_into_it(tmp_path, capsys):
    from anomaly_inspect.commands.common import check_output_json

    out = tmp_path / "out"
    owns = build_parser().parse_args(["demo", "--out", str(out)]).out_owns
    check_output_json(out / "r.json", out, owns)  # beside synthetic_<texture>/: fine
    for name in ("synthetic_fabric", "synthetic_metal/r.json"):
        with pytest.raises(ValueError, match=f"this command writes {name.split('/')[0]} in --out"):
            check_output_json(out / name, out, owns)
    assert main(["demo", "--out", str(out), "--output-json", str(out / "synthetic_fabric" / "r.json")]) == 1
    assert "this command writes synthetic_fabric in --out" in _one_line_error(capsys)
    assert not out.exists()


# Out-of-range --layers name the flag (or the config) in every model-building command, before any
# work.
RANGE = "backbone: layers: tf_efficientnet_lite0: layer indices {} out of range 0..4"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


# ---------------------------------------------------------------- --layers out of range


@pytest.mark.parametrize("layers", [[9, 10], [-2, -1], [2, 5]])
def test_candidate_of_refuses_layers_the_backbone_lacks(layers):
    cfg = ModelConfig()
    cfg.backbone.layers = layers
    bad = [i for i in layers if not 0 <= i <= 4]
    with pytest.raises(LayerRangeError) as info:
        Candidate.of(cfg)
    assert str(info.value) == RANGE.format(bad)


def _command(name, tmp_path):
    """``name``'s arguments up to the model options, with inputs that do not exist: reaching
    them would be another error, so the layers' error shows that it came before any work."""
    missing = str(tmp_path / "missing")
    return {
        "evaluate": ["evaluate", "--root", missing, "--category", "c"],
        "evaluate --auto": ["evaluate", "--auto", "--root", missing, "--category", "c"],
        "fit": ["fit", "--train", missing, "--out", str(tmp_path / "m")],
        "fit --auto": ["fit", "--auto", "--train", missing, "--out", str(tmp_path / "m")],
        "tune": ["tune", "--train", missing],
        "demo": ["demo", "--out", str(tmp_path / "d")],
        "bench-coreset": ["bench-coreset", "--root", missing, "--category", "c"],
        "export": ["export", "--out", str(tmp_path / "b.onnx")],
        "evaluate-lt": ["evaluate-lt", "--root", missing, "--categories", "a,b",
                        "--methods", "patchcore", "--manifest-dir", str(tmp_path / "md")],
    }[name]


COMMANDS = ["evaluate", "evaluate --auto", "fit", "fit --auto", "tune", "demo", "bench-coreset",
            "export", "evaluate-lt"]


@pytest.mark.parametrize("name", COMMANDS)
def test_layers_flag_out_of_range_names_the_flag_before_any_work(tmp_path, capsys, name):
    assert main([*_command(name, tmp_path), "--layers", "9,10", "--quiet"]) == 1
    assert _one_line(capsys) == f"error: --layers 9,10: {RANGE.format([9, 10])}"
    assert not (tmp_path / "d").exists() and not (tmp_path / "md").exists()


@pytest.mark.parametrize("name", ["tune", "evaluate"])
def test_negative_layers_are_refused(tmp_path, capsys, name):
    assert main([*_command(name, tmp_path), "--layers=-2,-1", "--quiet"]) == 1
    assert _one_line(capsys) == f"error: --layers -2,-1: {RANGE.format([-2, -1])}"


@pytest.mark.parametrize("name", ["evaluate", "tune", "fit --auto"])
def test_config_layers_out_of_range_name_the_config(tmp_path, capsys, name):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backbone: {layers: [9, 10]}\n")
    assert main([*_command(name, tmp_path), "--config", str(cfg), "--quiet"]) == 1
    assert _one_line(capsys) == f"error: {cfg}: {RANGE.format([9, 10])}"


# evaluate-lt does not offer --method; demo / evaluate-lt name the flag of a bad value.
# ---------------------------------------------------------------- evaluate-lt and demo flags


def test_evaluate_lt_does_not_offer_method_and_shows_the_methods_default(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate-lt", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--method " not in out and "--method," not in out
    assert "(default patchcore,softpatch,tailedcore)" in out
    from anomaly_inspect.cli import build_parser

    # argparse reads --method as an abbreviation of --methods, now the only option it can be
    args = build_parser().parse_args(["evaluate-lt", "--root", "r", "--categories", "a,b",
                                      "--method", "softpatch"])
    assert (args.methods, args.method) == ("softpatch", None)


@pytest.mark.parametrize("args, message", [
    (["evaluate-lt", "--root", "r", "--categories", "a,b", "--k", "-1"],
     "argument --k: must be a positive integer, got '-1'"),
    (["evaluate-lt", "--root", "r", "--categories", "a,b", "--noise", "5"],
     "argument --noise: must be a number in [0, 1), got '5'"),
    (["evaluate-lt", "--root", "r", "--categories", "a,b", "--noise", "x"],
     "argument --noise: must be a number in [0, 1), got 'x'"),
    (["demo", "--defects", "bogus"],
     "argument --defects: must be comma-separated defect types from scratch, stain, hole, crack, "
     "got 'bogus'"),
    (["demo", "--defects", ","],
     "argument --defects: must be comma-separated defect types from scratch, stain, hole, crack, "
     "got ','"),
])
def test_bad_values_name_their_flag(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_defects_default_and_list_parse():
    from anomaly_inspect.cli import build_parser
    from anomaly_inspect.data.synthetic import DEFECTS

    assert build_parser().parse_args(["demo"]).defects == list(DEFECTS)
    assert build_parser().parse_args(["demo", "--defects", "hole, crack"]).defects == ["hole", "crack"]
