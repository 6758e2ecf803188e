"""From a CLI review: out-of-range --layers name the flag (or the config) in every model-building
command, before any work; a failed --output-json write loses neither the table nor its reason;
--output-json may not replace the command's --config / --labels / --manifest; bench-scale checks
its model directory once, before any run; unwritable --out / cache folders are refused naming
the flag; evaluate-lt does not offer --method and demo / evaluate-lt name the flag of a bad value."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.commands.common import check_output_json
from anomaly_inspect.config import BackboneConfig, ModelConfig
from anomaly_inspect.features.backbone import LayerRangeError
from anomaly_inspect.tuning.candidates import Candidate
from layout_writer import stub_model_dir

RANGE = "backbone: layers: tf_efficientnet_lite0: layer indices {} out of range 0..4"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


# ---------------------------------------------------------------- 1: --layers out of range


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


# ---------------------------------------------------------------- 2: a failed --output-json write


def _denied(path, data, **kwargs):
    """files.write_json where the folder became unwritable after the run started: mkstemp's
    error names the temporary file."""
    raise PermissionError(errno.EACCES, "Permission denied", str(path.parent / f".{path.name}.x.tmp.json"))


class _Result:
    def to_dict(self):
        return {"image_auroc": 0.5}


def _stub_evaluate(monkeypatch, module):
    monkeypatch.setattr("anomaly_inspect.evaluation.evaluate.evaluate", lambda *a, **k: _Result())
    monkeypatch.setattr(f"anomaly_inspect.commands.{module}.print_result",
                        lambda result: print("THE TABLE"))


def _evaluate(tmp_path, monkeypatch):
    _stub_evaluate(monkeypatch, "evaluate")
    monkeypatch.setattr("anomaly_inspect.commands.evaluate.load_dataset", lambda *a, **k: None)
    return ["evaluate", "--root", str(tmp_path), "--category", "c"]


def _demo(tmp_path, monkeypatch):
    _stub_evaluate(monkeypatch, "demo")
    monkeypatch.setattr("anomaly_inspect.data.synthetic.generate_dataset",
                        lambda root, **k: root / "synthetic_fabric")
    monkeypatch.setattr("anomaly_inspect.data.mvtec.load_mvtec", lambda *a, **k: None)
    return ["demo", "--out", str(tmp_path / "d")]


def _ood(tmp_path, monkeypatch):
    report = {"table": "THE TABLE", "convention": "c", "synthetic": None, "orientation": {},
              "timings_s": {"total": 1.0, "features": 1.0, "images_extracted": 2},
              "peak_rss_mb": 1.0}
    monkeypatch.setattr("anomaly_inspect.evaluation.ood_benchmark.load_ood_config",
                        lambda *a, **k: type("C", (), {"cache_dir": None, "backbone": BackboneConfig()})())
    monkeypatch.setattr("anomaly_inspect.evaluation.ood_benchmark.run_ood_benchmark",
                        lambda *a, **k: report)
    return ["ood-benchmark", "--config", "ood/isic_all"]


def _evaluate_lt(tmp_path, monkeypatch):
    import anomaly_inspect.commands.evaluate_lt as command

    class Report:
        results = []
        methods = {}
        class_size_estimates = {"per_class": {}}
        timings = {}

        def mean_auroc(self):
            return {}

        def to_dict(self):
            return {"results": []}

    split = type("S", (), {"tail": "step", "k": 4, "noise": 0.1, "seed": 0, "tail_classes": [],
                           "counts": {}, "categories": []})()
    monkeypatch.setattr("anomaly_inspect.data.layout.resolve_category_dirs", lambda *a: {})
    monkeypatch.setattr("anomaly_inspect.data.longtail.load_or_build_longtail", lambda *a: split)
    monkeypatch.setattr("anomaly_inspect.evaluation.longtail.evaluate_longtail",
                        lambda *a, **k: Report())
    monkeypatch.setattr(command, "print_table", lambda rows: print("THE TABLE"))
    return ["evaluate-lt", "--root", str(tmp_path), "--categories", "a,b", "--methods",
            "patchcore", "--manifest-dir", str(tmp_path / "md")]


@pytest.mark.parametrize("command", [_evaluate, _demo, _ood, _evaluate_lt])
def test_a_failed_output_json_write_still_prints_the_table_and_names_the_flag(
        tmp_path, monkeypatch, capsys, command):
    args = command(tmp_path, monkeypatch)
    monkeypatch.setattr("anomaly_inspect.files.write_json", _denied)
    target = tmp_path / "late" / "r.json"
    assert main([*args, "--output-json", str(target), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "THE TABLE" in out
    assert err == f"error: --output-json {target}: cannot write it (Permission denied)\n"


def test_output_json_is_still_written_before_the_table(tmp_path, monkeypatch, capsys):
    """The table follows the JSON: a closed pipe (| head) while printing loses nothing."""
    args = _evaluate(tmp_path, monkeypatch)

    def closed(result):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("anomaly_inspect.commands.evaluate.print_result", closed)
    out = tmp_path / "r.json"
    assert main([*args, "--output-json", str(out), "--quiet"]) == 1
    assert json.loads(out.read_text()) == {"image_auroc": 0.5}


# ---------------------------------------------------------------- 3: --output-json onto an input file


@pytest.mark.parametrize("flag", ["--config", "--labels", "--manifest"])
def test_output_json_may_not_replace_the_commands_own_input_file(tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    given = tmp_path / "in.yaml"
    given.write_text("seed: 1\n")
    with pytest.raises(ValueError, match=rf"^--output-json in\.yaml: is this command's {flag} "
                                         rf"file; give another path$"):
        check_output_json(Path("in.yaml"), reads={flag: "sub/../in.yaml"})  # compared resolved
    check_output_json(tmp_path / "other.json", reads={flag: given})  # another file: fine
    check_output_json(tmp_path / "mvtec", reads={"--labels": "mvtec"})  # a keyword, no file


def test_cli_passes_config_labels_and_manifest_to_the_output_json_check(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 1\n")
    labels = tmp_path / "l.csv"
    labels.write_text("path,label\n")
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    for args, flag, path in [
        (["fit", "--train", str(tmp_path / "missing"), "--out", str(tmp_path / "m"),
          "--config", str(cfg)], "--config", cfg),
        (["screen", str(tmp_path / "model"), "x", "--out", str(tmp_path / "r"),
          "--labels", str(labels)], "--labels", labels),
        (["evaluate-lt", "--root", str(tmp_path), "--categories", "a,b",
          "--manifest", str(manifest)], "--manifest", manifest),
    ]:
        before = path.read_text()
        assert main([*args, "--output-json", str(path), "--quiet"]) == 1
        assert _one_line(capsys) == (f"error: --output-json {path}: is this command's {flag} "
                                     f"file; give another path")
        assert path.read_text() == before


# ---------------------------------------------------------------- 4: bench-scale


def test_bench_scale_checks_the_model_directory_once_before_any_run(tmp_path, monkeypatch, capsys):
    from anomaly_inspect.screening import scale_bench

    def no_run(*args, **kwargs):
        raise AssertionError("a run started")

    monkeypatch.setattr(scale_bench, "run_child", no_run)
    (tmp_path / "a.png").write_bytes(b"x")
    missing = tmp_path / "missing"
    assert main(["bench-scale", str(missing), str(tmp_path / "a.png"), "--images", "2",
                 "--quiet"]) == 1
    assert _one_line(capsys) == f"error: {missing}: model directory not found"


def test_bench_scale_labels_the_local_run_local(tmp_path, monkeypatch, capsys):
    from anomaly_inspect.screening import scale_bench

    monkeypatch.setattr("anomaly_inspect.pipeline.ray_engine.import_ray", lambda: None)
    monkeypatch.setattr(scale_bench, "bench_scale", lambda *a, **k: [
        {"engine": "local", "workers": None, "error": "boom", "round": 0},
        {"engine": "ray", "workers": 1, "error": "boom", "round": 0}])
    (tmp_path / "a.png").write_bytes(b"x")
    model = stub_model_dir(tmp_path / "model")
    assert main(["bench-scale", str(model), str(tmp_path / "a.png"), "--images", "2",
                 "--workers", "1", "--quiet"]) == 1
    assert _one_line(capsys) == "error: 2 of 2 bench-scale runs failed (first: local: boom)"
    assert scale_bench.run_label({"engine": "ray", "workers": 2}) == "ray x2"


def test_bench_scale_shows_a_progress_bar_over_runs(tmp_path, monkeypatch):
    import subprocess

    from anomaly_inspect.screening import scale_bench

    bars = []

    class Bar:
        def __init__(self, total, desc, unit="img", enabled=True):
            self.total, self.desc, self.unit, self.enabled, self.n = total, desc, unit, enabled, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def update(self, n=1):
            self.n += n

    monkeypatch.setattr(scale_bench, "Progress", Bar)
    monkeypatch.setattr(scale_bench, "run_child",
                        lambda call: subprocess.CompletedProcess([], 1, "", "ValueError: x"))
    for progress in (True, False):
        scale_bench.bench_scale(tmp_path / "m", [tmp_path / "a.png"], [("local", None), ("ray", 1)],
                                tmp_path / "w", rounds=2, progress=progress)
    assert [(b.total, b.unit, b.enabled, b.n) for b in bars] == [(4, "run", True, 4),
                                                                 (4, "run", False, 4)]


# ---------------------------------------------------------------- 5: unwritable --out / cache folders


INTO = ["screen", "explain", "demo", "evaluate-lt", "tune", "fit --auto", "evaluate --auto"]


# a folder written into is checked itself where it exists; export writes beside its --out
@pytest.mark.parametrize("name, below", [*((n, b) for n in INTO for b in (True, False)),
                                         ("export", True), ("export model", True)])
def test_an_unwritable_out_folder_is_refused_naming_the_flag_before_any_work(
        tmp_path, read_only, capsys, name, below):
    ro = read_only(tmp_path / "ro")
    target = ro / "sub" if below else ro
    missing = str(tmp_path / "missing")
    args, flag = {
        "screen": (["screen", missing, "x", "--out", str(target)], "--out"),
        "explain": (["explain", missing, "x", "--out", str(target)], "--out"),
        "demo": (["demo", "--out", str(target)], "--out"),
        "evaluate-lt": (["evaluate-lt", "--root", missing, "--categories", "a,b", "--methods",
                         "patchcore", "--manifest-dir", str(target)], "--manifest-dir"),
        "export": (["export", "--out", str(target / "b.onnx")], "--out"),
        "export model": (["export", missing, "--out", str(target / "bundle")], "--out"),
        "tune": (["tune", "--train", missing, "--tune-cache", str(target)], "--tune-cache"),
        "fit --auto": (["fit", "--auto", "--train", missing, "--out", str(tmp_path / "m"),
                        "--tune-cache", str(target)], "--tune-cache"),
        "evaluate --auto": (["evaluate", "--auto", "--root", missing, "--category", "c",
                             "--tune-cache", str(target)], "--tune-cache"),
    }[name]
    path = target / "b.onnx" if name == "export" else target / "bundle" if name == "export model" \
        else target
    assert main([*args, "--quiet"]) == 1
    assert _one_line(capsys) == f"error: {flag} {path}: cannot write in {ro} (permission denied)"


# ---------------------------------------------------------------- 6: evaluate-lt and demo flags


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
