"""screen's throughput leaves out a distributed engine's warm-up: the wait, before a map's first
output, for its workers to start and set up (Ray: actor processes, model load), which the
engine records per map (``warm_up``). It was in ``seconds`` (only ``ray.init`` was timed apart),
so ``--engine ray`` gave 3.4 img/s where the local engine, its model loaded before the clock,
gave 51 on the same 64 images. Clocks are faked in the screen tests: every figure is exact."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass

import pytest

import anomaly_inspect.commands.screen as screen_command
from anomaly_inspect.cli import main
from anomaly_inspect.pipeline import LocalEngine, make_engine
from anomaly_inspect.pipeline.engine import warm_up_seconds
from anomaly_inspect.screening.runner import screen
from layout_writer import fake_screen_clock, fit_tiny_model, rgb_image, write_image

PER_IMAGE_S = 10.0  # the faked time each image's scoring takes
START_S = 100.0  # the faked engine start-up (ray.init)
WARM_S = 1000.0  # the faked warm-up of each map's workers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmup")
    model, model_dir = fit_tiny_model(root)
    write_image(root / "inp" / "a.png", rgb_image(40, seed=11))
    write_image(root / "inp" / "b.png", rgb_image(40, seed=12))
    return model, model_dir, root / "inp"


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves only as the faked work says: PER_IMAGE_S per image a scoring pass
    yields."""
    return fake_screen_clock(monkeypatch, PER_IMAGE_S)


class WarmingEngine(LocalEngine):
    """A distributed engine's stand-in: started in START_S, and each map with paths waits
    WARM_S for its workers before its first output, recorded as Ray records it."""

    def __init__(self, clock):
        self.clock, self.warm_up = clock, 0.0

    def start(self) -> None:
        self.clock.t += START_S

    def map(self, task, paths, progress=None):
        self.warm_up = 0.0
        if paths:
            self.clock.t += WARM_S
            self.warm_up = WARM_S
        yield from super().map(task, paths, progress)


def _screen(model, inputs, out, **kw):
    return screen(model, inputs, out, progress=False, report=False, **kw)


def test_the_workers_warm_up_is_timed_apart(tiny, clock, tmp_path):
    model, _, inp = tiny
    s = _screen(model, [inp], tmp_path / "out", engine=WarmingEngine(clock))
    assert s.n_scored == 2
    assert s.images_per_second == 1 / PER_IMAGE_S  # as the local engine's
    assert (s.engine_start, s.engine_warm_up, s.seconds) == (START_S, WARM_S, 2 * PER_IMAGE_S)


def test_the_resumed_rows_warm_up_stays_theirs(tiny, clock, tmp_path):
    """The pass that completes resumed rows is timed apart whole (its own map, its own
    warm-up); only the new images' map's warm-up is the engine's figure."""
    model, _, inp = tiny
    out = tmp_path / "out"
    _screen(model, [inp / "a.png"], out)
    clock.t = 0.0
    s = _screen(model, [inp], out, engine=WarmingEngine(clock), maps="all")
    assert (s.n_resumed, s.n_scored) == (1, 1)
    assert (s.resumed_seconds, s.engine_warm_up, s.seconds) == (WARM_S + PER_IMAGE_S, WARM_S,
                                                                 PER_IMAGE_S)
    clock.t = 0.0
    s = _screen(model, [inp], out, engine=WarmingEngine(clock), maps="all")  # nothing to do
    assert (s.n_scored, s.engine_warm_up, s.seconds) == (0, 0, 0)


def test_the_command_prints_and_records_the_warm_up(tiny, clock, tmp_path, monkeypatch, capsys):
    _, model_dir, inp = tiny
    monkeypatch.setattr(screen_command, "engine_from_args", lambda args: WarmingEngine(clock))
    out_json = tmp_path / "s.json"
    assert main(["screen", str(model_dir), str(inp), "--out", str(tmp_path / "out"),
                 "--no-report", "--output-json", str(out_json)]) == 0
    d = json.loads(out_json.read_text())
    assert (d["engine_start"], d["engine_warm_up"], d["seconds"]) == (START_S, WARM_S,
                                                                      2 * PER_IMAGE_S)
    assert d["images_per_second"] == round(1 / PER_IMAGE_S, 3)
    assert main(["screen", str(model_dir), str(inp), "--out", str(tmp_path / "out2"),
                 "--no-report"]) == 0
    table = capsys.readouterr().out
    assert re.search(rf"\nengine warm-up +{WARM_S:.1f} s \(.*not in the throughput\)\n", table)


def test_an_engine_without_workers_records_no_warm_up():
    assert warm_up_seconds(None) == 0.0
    assert warm_up_seconds(LocalEngine()) == 0.0


SETUP_S = 1.0  # the toy task's setup (a model load)
RUN_S = 0.3  # ... and its time per batch


@dataclass
class SlowSetup:
    """A toy task whose setup takes SETUP_S and each batch RUN_S."""

    batch_size: int = 2

    def setup(self) -> None:
        time.sleep(SETUP_S)

    def run(self, paths, local_copies=None):
        for s in range(0, len(paths), self.batch_size):
            time.sleep(RUN_S)
            yield len(paths[s:s + self.batch_size]), [p.name for p in paths[s:s + self.batch_size]]


def test_the_ray_engine_records_its_actors_warm_up(ray_session, tmp_path):
    """The wait for the first output less that batch's own run: the actors' start and setup,
    not the scoring; each map records its own, and a map without paths none."""
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    paths = [tmp_path / f"f{i}" for i in range(4)]
    engine = make_engine("ray", workers=2)
    assert engine.warm_up == 0.0  # no map yet
    begun = time.perf_counter()
    outputs = engine.map(SlowSetup(), paths)
    assert next(outputs) == ["f0", "f1"]
    first = time.perf_counter() - begun
    assert [n for out in outputs for n in out] == ["f2", "f3"]
    assert engine.warm_up >= SETUP_S
    assert first - engine.warm_up >= RUN_S  # the first batch's run is scoring: not in it
    assert warm_up_seconds(engine) == engine.warm_up
    assert list(engine.map(SlowSetup(), [])) == [] and engine.warm_up == 0.0


def test_the_warm_up_leaves_out_every_batch_of_the_first_block(ray_session, tmp_path):
    """An actor returns a block's batches together: the wait for the first output holds them
    all (here 2 per block), and none of them is warm-up."""
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    engine = make_engine("ray", workers=2)
    begun = time.perf_counter()
    outputs = engine.map(SlowSetup(), [tmp_path / f"f{i}" for i in range(16)])
    next(outputs)
    first = time.perf_counter() - begun
    assert len([n for out in outputs for n in out]) == 14
    assert engine.warm_up >= SETUP_S
    assert first - engine.warm_up >= 2 * RUN_S
