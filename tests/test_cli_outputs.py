"""Where a command writes is checked before any work, and its JSON is written before the table
(a reader that closes the pipe early, ``| head -1``, must not lose it)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.commands.common import check_output_json
from anomaly_inspect.config import BackboneConfig
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.screening.model_dir import ModelInfo, read_model_info, save_model_dir

TINY_FIT = ["--image-size", "64", "--runtime", "torch", "--quiet"]


def _images(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_fit_out_below_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "m"
    # the missing --train shows that nothing ran before the check (before: it failed on it)
    assert main(["fit", "--train", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 1
    assert _one_line(capsys) == f"error: --out {out}: {tmp_path / 'afile'} is a file, not a folder"


def test_fit_out_in_a_read_only_folder_is_refused_before_any_work(tmp_path, read_only, capsys):
    ro = read_only(tmp_path / "ro")
    out = ro / "sub" / "m"
    assert main(["fit", "--train", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 1
    assert _one_line(capsys) == f"error: --out {out}: cannot write in {ro} (permission denied)"


@pytest.mark.parametrize("command", ["fit", "screen"])
def test_output_json_in_a_read_only_folder_is_refused_before_any_work(tmp_path, read_only,
                                                                       capsys, command):
    ro = read_only(tmp_path / "ro")
    args = (["fit", "--train", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]
            if command == "fit" else ["screen", str(tmp_path / "m"), "x", "--out", str(tmp_path / "r")])
    assert main([*args, "--output-json", str(ro / "r.json"), "--quiet"]) == 1
    assert _one_line(capsys) == (f"error: --output-json {ro / 'r.json'}: cannot write in {ro} "
                                 f"(permission denied)")


def test_fit_engine_options_are_refused_before_tuning(tmp_path, monkeypatch, capsys):
    def tune(*args, **kwargs):
        raise AssertionError("tuned before the engine options were checked")

    monkeypatch.setattr("anomaly_inspect.commands.fit.run_tune", tune)
    code = main(["fit", "--auto", "--workers", "2", "--train", str(_images(tmp_path / "train")),
                 "--out", str(tmp_path / "m"), "--quiet"])
    assert code == 1
    assert _one_line(capsys) == ("error: --address, --workers and --no-shared-storage apply to a "
                                 "distributed engine, not 'local'")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    train = _images(root / "train")
    assert main(["fit", "--train", str(train), "--out", str(root / "model"), *TINY_FIT]) == 0
    return root


def _closed_pipe(*args, **kwargs):
    raise BrokenPipeError(32, "Broken pipe")


def test_fit_writes_its_json_before_the_table(tmp_path, fitted, monkeypatch):
    monkeypatch.setattr("anomaly_inspect.commands.fit.print_table", _closed_pipe)
    out = tmp_path / "fit.json"
    assert main(["fit", "--train", str(fitted / "train"), "--out", str(tmp_path / "m"),
                 "--output-json", str(out), *TINY_FIT]) == 1  # the closed pipe
    assert json.loads(out.read_text())["model_dir"] == str(tmp_path / "m")


def test_screen_writes_its_json_before_the_table(tmp_path, fitted, monkeypatch):
    monkeypatch.setattr("anomaly_inspect.commands.screen.print_table", _closed_pipe)
    out = tmp_path / "screen.json"
    assert main(["screen", str(fitted / "model"), str(fitted / "train"), "--out",
                 str(tmp_path / "r"), "--output-json", str(out), "--quiet"]) == 1
    assert json.loads(out.read_text())["n_inputs"] == 6


def test_output_json_may_not_replace_a_model_directorys_file(tmp_path, capsys):
    scorer = PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(patches=np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)))
    info = ModelInfo(config={}, backbone={"name": "b", "weights": {"checksum": "abc"}},
                     calibration={}, train_images=["a.png"], calibration_images=["b.png"])
    model = save_model_dir(tmp_path / "model", info, scorer)
    saved = (model / "model.json").read_bytes()
    # the missing --train shows that nothing ran before the check
    assert main(["fit", "--train", str(tmp_path / "missing"), "--out", str(tmp_path / "m2"),
                 "--output-json", str(model / "model.json"), "--quiet"]) == 1
    assert _one_line(capsys) == (f"error: --output-json {model / 'model.json'}: is a file of "
                                 f"model directory {model}; give another path")
    assert (model / "model.json").read_bytes() == saved
    assert read_model_info(model).train_images == ["a.png"]
    for rel in ("checksums.json", "scorer/scorer.json"):
        with pytest.raises(ValueError, match="is a file of model directory"):
            check_output_json(model / rel)
    check_output_json(model / "notes.json")  # beside the model's files: fine


@pytest.mark.parametrize("written, name, command", [
    (("results.csv", "screen.json"), "results.csv", "screen"),
    (("results.csv", "screen.json"), "report.html", "screen"),
    (("explanations.json",), "explanations.json", "explain"),
])
def test_output_json_may_not_replace_an_earlier_runs_results(tmp_path, written, name, command):
    run = tmp_path / "run"
    run.mkdir()
    check_output_json(run / name)  # not (yet) a results folder: any file name
    for w in written:
        (run / w).write_text("x")
    with pytest.raises(ValueError, match=f"is the {name} of an earlier {command} run in {run}; "
                                         f"give another path"):
        check_output_json(run / name)
    check_output_json(run / "r.json")  # beside them: fine


# A failed --output-json write loses neither the table nor its reason; --output-json may not
# replace the command's --config / --labels / --manifest; unwritable --out / cache folders are
# refused naming the flag.
# ---------------------------------------------------------------- a failed --output-json write


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
    assert json.loads(out.read_text()) == {"image_auroc": 0.5, "engine": "local", "workers": None}


# ---------------------------------------------------------------- --output-json onto an input file


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


# ---------------------------------------------------------------- unwritable --out / cache folders


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
