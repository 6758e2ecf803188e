"""bench-scale: a failed configuration is a row with its reason (the others still run, the
JSON is written, the exit status says it); an interrupted run is stopped so that its cleanup
(ray.shutdown) runs; the batch size reaches the model as screen passes it. No Ray runs here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from anomaly_inspect.screening import scale_bench

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
    (tmp_path / "paths.txt").write_text("a.png")
    with pytest.raises(Stop):
        scale_bench.run_one(str(tmp_path / "m"), str(tmp_path / "paths.txt"), "local", None, 3)
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
