"""screen's throughput counts this run's scored images over this run's time for them: not its
unreadable files (reported apart, as bench-scale's rates leave them out), not the pass that
completes resumed rows (``resumed_seconds``), not the engine's start-up (``engine_start``, as
evaluate and bench-scale give it); bench-scale's ``distinct_images`` counts the files it used.
Clocks are faked: every figure is exact."""

from __future__ import annotations

import json

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.pipeline.engine import LocalEngine
from anomaly_inspect.screening.runner import ScreenSummary, screen
from layout_writer import fake_screen_clock, fit_tiny_model, rgb_image, stub_model_dir, write_image

PER_IMAGE_S = 10.0  # the faked time each image's scoring takes
START_S = 100.0  # the faked engine start-up


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("throughput")
    model, model_dir = fit_tiny_model(root)
    inp = root / "inp"
    write_image(inp / "a.png", rgb_image(40, seed=11))
    write_image(inp / "b.png", rgb_image(40, seed=12))
    return model, model_dir, inp


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves only as the faked work says: PER_IMAGE_S per image any scoring pass
    yields (this run's or the resumed rows'), START_S per engine start."""
    return fake_screen_clock(monkeypatch, PER_IMAGE_S)


class StartedEngine(LocalEngine):
    """The local engine with a start, as Ray's: counts its starts, each START_S long."""

    def __init__(self, clock):
        self.clock, self.starts = clock, []

    def start(self) -> None:
        self.starts.append(self.clock.t)
        self.clock.t += START_S


def _screen(model, inputs, out, **kw):
    return screen(model, inputs, out, progress=False, report=False, **kw)


def test_the_rate_counts_the_scored_images_not_the_errors():
    s = ScreenSummary(out_dir=None, results_csv=None, report_html=None, n_inputs=220,
                      n_scored=20, n_resumed=0, n_flagged=0, n_errors=200, seconds=2.0)
    assert s.images_per_second == 10.0
    assert ScreenSummary(None, None, None, 5, 0, 0, 0, 5, seconds=1.0).images_per_second == 0.0


def test_the_command_rate_leaves_unreadable_files_out(tiny, clock, tmp_path):
    _, model_dir, inp = tiny
    mixed = tmp_path / "mixed"
    write_image(mixed / "a.png", rgb_image(40, seed=11))
    for i in range(3):
        (mixed / f"bad_{i}.png").write_text("not an image")
    out_json = tmp_path / "s.json"
    code = main(["screen", str(model_dir), str(mixed), "--out", str(tmp_path / "out"),
                 "--no-report", "--quiet", "--output-json", str(out_json)])
    d = json.loads(out_json.read_text())
    assert code == 1 and (d["n_scored"], d["n_errors"]) == (1, 3)
    assert d["seconds"] == 4 * PER_IMAGE_S  # the errors' reading is this run's time
    assert d["images_per_second"] == round(1 / (4 * PER_IMAGE_S), 3)
    assert (d["engine_start"], d["resumed_seconds"]) == (0, 0)


def test_the_resumed_rows_completion_is_timed_apart(tiny, clock, tmp_path):
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp / "a.png"], out)  # maps: none
    clock.t = 0.0
    s = _screen(model, [inp], out, maps="all")  # a.png's map written again, b.png scored
    assert (s.n_resumed, s.n_scored) == (1, 1)
    assert (s.seconds, s.resumed_seconds) == (PER_IMAGE_S, PER_IMAGE_S)
    assert s.images_per_second == 1 / PER_IMAGE_S
    clock.t = 0.0
    s = _screen(model, [inp], out, maps="all")  # nothing new, nothing to complete
    assert (s.n_scored, s.seconds, s.resumed_seconds, s.images_per_second) == (0, 0, 0, 0)


def test_the_engine_starts_before_the_clock_and_is_timed_apart(tiny, clock, tmp_path):
    model, _, inp = tiny
    engine = StartedEngine(clock)
    s = _screen(model, [inp], tmp_path / "out", engine=engine)
    assert len(engine.starts) == 1 and s.n_scored == 2
    assert (s.engine_start, s.seconds) == (START_S, 2 * PER_IMAGE_S)
    assert s.images_per_second == 1 / PER_IMAGE_S


def test_the_engine_starts_once_before_the_resumed_rows_and_not_for_nothing(tiny, clock,
                                                                            tmp_path):
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp / "a.png"], out)
    clock.t = 0.0
    engine = StartedEngine(clock)
    s = _screen(model, [inp], out, engine=engine, maps="all")
    assert engine.starts == [0.0]  # before either scoring pass
    assert (s.engine_start, s.resumed_seconds, s.seconds) == (START_S, PER_IMAGE_S, PER_IMAGE_S)
    engine = StartedEngine(clock)
    s = _screen(model, [inp], out, engine=engine, maps="all")  # every row done: no start
    assert engine.starts == [] and s.engine_start == 0.0


def test_bench_scale_counts_the_distinct_files_it_used(monkeypatch, tmp_path):
    from anomaly_inspect.pipeline import ray_engine
    from anomaly_inspect.screening import scale_bench

    used = {}

    def bench(model_dir, paths, configs, work, rounds, progress, batch_size):
        used["paths"] = paths
        return []

    monkeypatch.setattr(ray_engine, "import_ray", lambda: None)
    monkeypatch.setattr(scale_bench, "bench_scale", bench)
    model_dir = stub_model_dir(tmp_path / "m")
    for i in range(4):
        write_image(tmp_path / "inp" / f"{i}.png", rgb_image(16, seed=i))
    for images, distinct in ((2, 2), (10, 4)):
        out = tmp_path / f"bs{images}.json"
        assert main(["bench-scale", str(model_dir), str(tmp_path / "inp"), "--images",
                     str(images), "--quiet", "--output-json", str(out)]) == 0
        d = json.loads(out.read_text())
        assert (d["images"], d["distinct_images"]) == (images, distinct)
        assert len(set(used["paths"])) == distinct
