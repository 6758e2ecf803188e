"""bench-scale: a failed configuration is a row with its reason (the others still run, the
JSON is written, the exit status says it); an interrupted run is stopped so that its cleanup
(ray.shutdown) runs; the batch size reaches the model as screen passes it. No Ray runs here."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import scale_bench
from anomaly_inspect.screening.model import ScoredImage
from layout_writer import stub_model_dir

TRACEBACK = """Traceback (most recent call last):
  File "<string>", line 1, in <module>
anomaly_inspect.pipeline.ray_engine.EngineFailed: ray engine: ValueError: cannot score x.png
"""


def _row(engine, workers):
    return {"engine": engine, "workers": workers, "images": 4, "batch_size": 2, "init_s": 0.0,
            "first_batch_s": 0.1, "startup_s": 0.2, "total_s": 1.0, "steady_img_s": 4.0,
            "overall_img_s": 4.0, "driver_peak_rss_mb": 100.0, "worker_peak_rss_mb": 0.0,
            "worker_processes": 0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved model directory (bench-scale checks it before any run; the runs are stubbed)."""
    import numpy as np

    from anomaly_inspect.features.extractor import Features
    from anomaly_inspect.scorers.patchcore import PatchCore
    from anomaly_inspect.screening.model_dir import ModelInfo, save_model_dir

    scorer = PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(patches=np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)))
    info = ModelInfo(config={}, backbone={"name": "b", "weights": {"checksum": "abc"}},
                     calibration={}, train_images=["a.png"], calibration_images=["b.png"])
    return save_model_dir(tmp_path_factory.mktemp("bench") / "m", info, scorer)


@pytest.fixture
def runs(monkeypatch):
    """run_child stubbed: 'ray' x1 fails as a Ray run does (a traceback), the others succeed."""
    def fake(call, grace=scale_bench.STOP_GRACE_S):
        if "'ray', 1," in call:
            return subprocess.CompletedProcess([], 1, "", TRACEBACK)
        engine, workers = ("local", None) if "'local'" in call else ("ray", 2)
        return subprocess.CompletedProcess([], 0, json.dumps(_row(engine, workers)) + "\n", "")

    monkeypatch.setattr(scale_bench, "run_child", fake)


def test_a_failed_configuration_is_a_row_with_its_reason_and_the_rest_run(runs, tmp_path, capsys):
    rows = scale_bench.bench_scale(tmp_path / "m", [tmp_path / "a.png"],
                                   [("local", None), ("ray", 1), ("ray", 2)], tmp_path / "w")
    assert [(r["engine"], r["workers"]) for r in rows] == [("local", None), ("ray", 1), ("ray", 2)]
    assert rows[1]["error"] == "EngineFailed: ray engine: ValueError: cannot score x.png"
    assert "error" not in rows[0] and rows[2]["overall_img_s"] == 4.0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "ray x1   failed: EngineFailed: ray engine: ValueError: cannot score x.png"


def test_bench_scale_command_writes_every_row_and_exits_non_zero(runs, model_dir, tmp_path, capsys):
    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray")
    from anomaly_inspect.cli import main

    (tmp_path / "a.png").write_bytes(b"x")
    out = tmp_path / "bs.json"
    rc = main(["bench-scale", str(model_dir), str(tmp_path / "a.png"), "--images", "4",
               "--workers", "1,2", "--quiet", "--output-json", str(out)])
    assert rc == 1
    runs_ = json.loads(out.read_text())["runs"]
    assert len(runs_) == 3 and "error" in runs_[1] and "error" not in runs_[2]
    err = capsys.readouterr().err
    assert "1 of 3 bench-scale runs failed (first: ray x1: EngineFailed: ray engine: " \
           "ValueError: cannot score x.png)" in err


def test_images_is_the_count_per_run_and_one_batch_has_no_steady_rate(model_dir, tmp_path,
                                                                      monkeypatch):
    """--images below the inputs' count took every input (max of the two); a run that scored
    everything in its first batch wrote NaN (invalid JSON) and printed 'nan img/s (xnan)'."""
    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray")
    from anomaly_inspect.cli import main

    seen = {}

    def fake_bench(model_dir, paths, configs, work, rounds, progress, batch_size):
        seen["n"] = len(paths)
        return [dict(_row("local", None), steady_img_s=None, round=0, load_before=0.0,
                     load_after=0.0),
                dict(_row("ray", 1), round=0, load_before=0.0, load_after=0.0)]

    monkeypatch.setattr(scale_bench, "bench_scale", fake_bench)
    for name in "abc":
        (tmp_path / f"{name}.png").write_bytes(b"x")
    out = tmp_path / "bs.json"
    assert main(["bench-scale", str(model_dir), str(tmp_path), "--images", "2",
                 "--workers", "1", "--quiet", "--output-json", str(out)]) == 0
    assert seen["n"] == 2
    assert json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))["runs"][0][
        "steady_img_s"] is None
    rows = json.loads(out.read_text())["runs"]
    assert "steady n/a (one batch)" in scale_bench.format_row(rows[0], rows)
    assert "steady   4.00 img/s (xnan)" in scale_bench.format_row(rows[1], rows)


def test_failure_reason_of_a_killed_or_silent_run():
    assert scale_bench.failure_reason(subprocess.CompletedProcess([], -9, "", "")) == \
        "killed by SIGKILL"
    assert scale_bench.failure_reason(subprocess.CompletedProcess([], 3, "", "")) == \
        "exit status 3"


def test_an_interrupted_run_is_stopped_so_that_its_cleanup_runs(tmp_path):
    """subprocess.run SIGKILLed the run on Ctrl-C, so its ray.shutdown (at exit) never ran and
    Ray's processes stayed behind; the run now gets SIGTERM, which raises there."""
    marker = tmp_path / "cleaned"
    call = (f"import atexit, pathlib, time; atexit.register(pathlib.Path({str(marker)!r})"
            f".write_text, 'clean'); print('started', flush=True); time.sleep(60)")
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            scale_bench.run_child(call, grace=20)
    finally:
        timer.cancel()
    assert marker.read_text() == "clean"


def test_run_one_passes_the_batch_size_to_load_model(monkeypatch, tmp_path):
    """As screen does (load_model(batch_size=...)), not by setting it on the loaded model."""
    import anomaly_inspect.screening.model as model_module

    seen = {}

    class Stop(Exception):
        pass

    def fake(directory, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(model_module, "load_model", fake)
    scale_bench.write_path_list(["a.png"], tmp_path / "paths.json")
    with pytest.raises(Stop):
        scale_bench.run_one(str(tmp_path / "m"), str(tmp_path / "paths.json"), "local", None, 3)
    assert seen == {"batch_size": 3}


def test_the_runs_preamble_makes_sigterm_raise():
    """SIGTERM raises SystemExit in a run, so its finally blocks and atexit hooks (ray.shutdown)
    run; without the preamble the process just dies (-15)."""
    code = ("import atexit, os, signal; atexit.register(print, 'cleaned up'); "
            "os.kill(os.getpid(), signal.SIGTERM); import time; time.sleep(30)")
    proc = subprocess.run([sys.executable, "-c", scale_bench._CHILD_PREAMBLE + code],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stdout == "cleaned up\n"




def test_a_run_ends_when_bench_scale_is_killed_outright(tmp_path):
    """The run has a session of its own (a Ctrl-C reaches bench-scale only), so a bench-scale
    killed with SIGKILL would leave it running with its Ray instance: it gets SIGTERM then."""
    import os
    import signal
    import time

    pid_file = tmp_path / "run.pid"
    call = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", (
        f"from anomaly_inspect.screening.scale_bench import run_child; run_child({call!r})")])
    try:
        deadline = time.time() + 30
        while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        run = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(run, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(run, signal.SIGKILL)
            raise AssertionError("the run outlived bench-scale")
    finally:
        parent.kill()


# bench-scale's steady rate only where it means something.
# ------------------------------------------------------------------ bench-scale's steady rate


def test_the_steady_rate_needs_batches_and_time_after_the_first():
    need = scale_bench.MIN_STEADY_BATCHES
    assert need == 3 and scale_bench.MIN_STEADY_S == 1.0
    # 40 images at batch 32 on Ray: 8 images 0.01 s after the first batch (it printed 758.80)
    assert scale_bench.steady_rate(8, 1, 0.0105) == (None, "1 batch after the first; 3 needed")
    assert scale_bench.steady_rate(0, 0, 0.0) == (None, "one batch")
    # enough batches, but drained at once (finished while the first was in flight)
    assert scale_bench.steady_rate(32, 4, 0.05) == (None, "0.05 s after the first batch; 1 s needed")
    # the recorded 1,000-image runs: ~62 batches over ~20 s, the rate as before
    assert scale_bench.steady_rate(984, 61, 20.17) == (984 / 20.17, None)


class _Batch:
    def __init__(self, n):
        self.images = [types.SimpleNamespace(error="")] * n


class _Model:
    class extractor:  # noqa: N801  (the attribute run_one reads)
        batch_size = 32

    def iter_score(self, paths, **kwargs):
        yield _Batch(32)
        yield _Batch(len(paths) - 32)


def test_a_short_run_has_no_steady_rate(monkeypatch, tmp_path):
    import anomaly_inspect.screening.model as model_module

    monkeypatch.setattr(model_module, "load_model", lambda directory, **kw: _Model())
    scale_bench.write_path_list([f"{i}.png" for i in range(40)], tmp_path / "paths.json")
    row = scale_bench.run_one(str(tmp_path / "m"), str(tmp_path / "paths.json"), "local", None)
    assert row["images"] == 40 and row["steady_img_s"] is None
    assert row["steady_na"] == "1 batch after the first; 3 needed"
    row.update(round=0, load_before=0.0, load_after=0.0)
    assert "steady n/a (1 batch after the first; 3 needed)" in scale_bench.format_row(row, [row])


# bench-scale's start-up counts from the run's process start.
_STUB = """
import time, types
import anomaly_inspect.screening.model as model_module
class _Model:
    extractor = types.SimpleNamespace(batch_size=2)
    def iter_score(self, paths, **kwargs):
        yield types.SimpleNamespace(images=[types.SimpleNamespace(error="") for _ in paths])
model_module.load_model = lambda directory, batch_size=None: _Model()
time.sleep(1.5)  # the heavy imports of a real run
"""


def test_bench_scale_start_up_counts_from_the_runs_process_start(tmp_path, monkeypatch):
    """The start-up figure began after the run's imports (torch, the model module), while the
    docs say 'process start to the first scored batch'."""
    (tmp_path / "stub.py").write_text(_STUB, encoding="utf-8")

    def run_child(call, grace=scale_bench.STOP_GRACE_S):
        code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import stub; {call}"
        return subprocess.run([sys.executable, "-c", scale_bench._CHILD_PREAMBLE + code],
                              capture_output=True, text=True, timeout=120)

    monkeypatch.setattr(scale_bench, "run_child", run_child)
    rows = scale_bench.bench_scale(tmp_path / "m", [tmp_path / "a.png"], [("local", None)],
                                   tmp_path / "w", progress=False)
    assert "error" not in rows[0], rows[0]
    assert rows[0]["startup_s"] >= 1.5 and rows[0]["total_s"] >= rows[0]["startup_s"]


# bench-scale checks its model directory once, before any run.
def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


# ---------------------------------------------------------------- bench-scale


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


# bench-scale counts only the images it scored (unreadable ones are an errors count, all of them
# a refusal).
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# ------------------------------------------------------ bench-scale: unreadable images


class _RowsBatch:
    def __init__(self, rows):
        self.images = rows


class _ErrorRowsModel:
    """Scores a batch of 4: the paths named ``bad*`` come back as error rows, as unreadable
    images do from ``Model.iter_score``."""

    class extractor:  # noqa: N801  (the attribute run_one reads)
        batch_size = 4

    def iter_score(self, paths, **kwargs):
        for s in range(0, len(paths), 4):
            yield _RowsBatch([ScoredImage(p, float("nan"), float("nan"), None,
                                      "cannot identify image file") if "bad" in p else
                          ScoredImage(p, 1.0, 0.5, False) for p in paths[s:s + 4]])


def _run(tmp_path, monkeypatch, names):
    import anomaly_inspect.screening.model as model_module

    monkeypatch.setattr(model_module, "load_model", lambda directory, **kw: _ErrorRowsModel())
    scale_bench.write_path_list(names, tmp_path / "paths.json")
    started = time.perf_counter() - 10  # the run's process started 10 s ago
    row = scale_bench.run_one(str(tmp_path / "m"), str(tmp_path / "paths.json"), "local", None,
                              started=started)
    row.update(round=0, load_before=0.0, load_after=0.0)
    return row


def test_run_one_counts_only_the_scored_images(tmp_path, monkeypatch):
    """8 random-byte files gave '40 img overall 11.26 img/s': error rows were counted."""
    row = _run(tmp_path, monkeypatch, [f"bad{i}.png" if i % 4 == 0 else f"{i}.png"
                                       for i in range(40)])
    assert row["images"] == 30 and row["errors"] == 10
    assert row["first_error"] == "bad0.png: cannot identify image file"
    assert row["overall_img_s"] == pytest.approx(30 / row["total_s"], rel=0.01)
    assert "   30 img (10 unreadable)" in scale_bench.format_row(row, [row])


def test_a_run_that_read_no_image_prints_without_dividing_by_zero(tmp_path, monkeypatch):
    row = _run(tmp_path, monkeypatch, [f"bad{i}.png" for i in range(8)])
    assert row["images"] == 0 and row["errors"] == 8 and row["overall_img_s"] == 0.0
    assert "0 img (8 unreadable)" in scale_bench.format_row(row, [row])
    assert "(xnan local)" in scale_bench.format_row(row, [row])


def _error_count_row(engine, workers, images, errors):
    return {"engine": engine, "workers": workers, "images": images, "errors": errors,
            **({"first_error": "x/bad.png: cannot identify image file"} if errors else {}),
            "batch_size": 4, "init_s": 0.0, "first_batch_s": 0.1, "startup_s": 0.2,
            "total_s": 1.0, "steady_img_s": None, "overall_img_s": float(images),
            "driver_peak_rss_mb": 1.0, "worker_peak_rss_mb": 0.0, "worker_processes": 0,
            "round": 0, "load_before": 0.0, "load_after": 0.0}


def _bench_scale(tmp_path, monkeypatch, rows):
    monkeypatch.setattr("anomaly_inspect.pipeline.ray_engine.import_ray", lambda: None)
    monkeypatch.setattr(scale_bench, "bench_scale", lambda *a, **k: rows)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_bytes(b"x")
    return main(["bench-scale", str(stub_model_dir(tmp_path / "model")), str(tmp_path / "x"),
                 "--images", "8", "--workers", "1", "--quiet"])


def test_bench_scale_refuses_when_every_image_failed(tmp_path, monkeypatch, capsys):
    assert _bench_scale(tmp_path, monkeypatch, [_error_count_row("local", None, 0, 8),
                                                _error_count_row("ray", 1, 0, 8)]) == 1
    assert _one_line_error(capsys) == (
        "error: no image could be read in 2 of 2 bench-scale runs (first: local: "
        "x/bad.png: cannot identify image file)")


def test_bench_scale_warns_with_the_count_when_some_images_failed(tmp_path, monkeypatch, capsys,
                                                                  caplog):
    with caplog.at_level(logging.WARNING):
        assert _bench_scale(tmp_path, monkeypatch, [_error_count_row("local", None, 6, 2),
                                                    _error_count_row("ray", 1, 6, 2)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["2 of 8 images could not be read in 2 of 2 bench-scale runs (first: "
                        "local: x/bad.png: cannot identify image file); the rates count the "
                        "scored images only"]
    assert "6 img (2 unreadable)" in capsys.readouterr().out
