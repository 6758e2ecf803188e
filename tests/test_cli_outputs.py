"""Where a command writes is checked before any work, and its JSON is written before the table
(a reader that closes the pipe early, ``| head -1``, must not lose it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anomaly_inspect.cli import main
from anomaly_inspect.commands.common import check_output_json
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
