"""The Ray engine on toy tasks: order, batching, once-per-actor setup, shared values, shipped
bytes (spool names); and the one-line error when Ray is missing. Real-data equality (and
shipped model and images): test_ray_real.py."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from anomaly_inspect.pipeline import LocalEngine, make_engine


class Counter:
    n = 0

    def update(self, n: int) -> None:
        self.n += n


@dataclass
class EchoTask:
    """Yields, per batch of ``batch_size`` paths: the names, the worker's pid, its setup count,
    the shared value and (when the engine shipped bytes) the files' contents."""

    batch_size: int = 4
    shared: object = None
    setups: int = field(default=0)

    def setup(self) -> None:
        self.setups += 1
        self.value = None if self.shared is None else self.shared.get()

    def run(self, paths, local_copies=None):
        for s in range(0, len(paths), self.batch_size):
            chunk = paths[s:s + self.batch_size]
            local = chunk if local_copies is None else local_copies[s:s + self.batch_size]
            contents = [p.read_text() if p.is_file() else None for p in local]
            yield len(chunk), ([p.name for p in chunk], os.getpid(), self.setups, self.value,
                               contents)


@pytest.fixture(scope="module")
def echo_pickled_by_value(ray_session):
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on
    yield ray_session  # the workers' path


def _files(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"img_{i:03d}.txt"
        p.write_text(f"content {i}")
        paths.append(p)
    return paths


def test_ray_engine_keeps_order_and_sets_up_once_per_actor(echo_pickled_by_value, tmp_path):
    paths = _files(tmp_path, 37)
    engine = make_engine("ray", workers=2)
    bar = Counter()
    outs = list(engine.map(EchoTask(shared=engine.share({"k": 7})), paths, bar))
    assert bar.n == 37
    names = [n for o in outs for n in o[0]]
    assert names == [p.name for p in paths]  # every path once, in order
    assert all(len(o[0]) <= 4 for o in outs) and len(outs) >= 10
    assert len({o[1] for o in outs}) <= 2  # at most two actors ...
    assert {o[2] for o in outs} == {1}  # ... each set up once
    assert {o[3]["k"] for o in outs} == {7}  # the shared value reached every actor
    local = [o[0] for o in LocalEngine().map(EchoTask(), paths)]
    assert [n for chunk in local for n in chunk] == names


def test_missing_ray_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[ray\]"') as err:
        make_engine("ray")
    assert "\n" not in str(err.value)


def test_local_engine_rejects_distributed_options():
    with pytest.raises(ValueError, match="distributed engine"):
        make_engine("local", workers=2)
    assert make_engine("local").share(3).get() == 3


def test_cli_without_ray_stops_with_install_hint(monkeypatch, tmp_path, capsys):
    from anomaly_inspect.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    rc = main(["screen", str(tmp_path / "model"), str(tmp_path), "--out", str(tmp_path / "o"),
               "--engine", "ray", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and 'pip install -e ".[ray]"' in err


def test_spooled_names_do_not_collide(tmp_path):
    pytest.importorskip("ray")
    from anomaly_inspect.pipeline.ray_engine import _TaskActor

    actor = _TaskActor.__new__(_TaskActor)
    actor.spool = None
    import numpy as np

    a, b = Path("x/a.png"), Path("y/a.png")
    out = actor._spool([a, b], np.array([b"1", b"2"], dtype=object), np.array(["", ""]))
    assert out[0] != out[1] and [p.read_bytes() for p in out] == [b"1", b"2"]
    actor.__del__()


def test_shard_actors_search_equals_unsharded(ray_session):
    import numpy as np

    from anomaly_inspect.pipeline.ray_shards import RayShardedSearch
    from anomaly_inspect.scorers.nn_index import NearestNeighbours

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(900, 12)).astype(np.float32)
    queries = rng.normal(size=(150, 12)).astype(np.float32)
    shards = RayShardedSearch(bank, n_shards=3)
    try:
        for k in (1, 3):
            d0, i0 = NearestNeighbours("flat").fit(bank).search(queries, k)
            d1, i1 = shards.search(queries, k)
            np.testing.assert_array_equal(i1, i0)
            np.testing.assert_allclose(d1, d0, rtol=1e-6)
    finally:
        shards.close()


@dataclass
class FailingTask:
    batch_size: int = 2

    def setup(self) -> None:
        pass

    def run(self, paths, local_copies=None):
        raise ValueError(f"cannot score {paths[0].name}")
        yield  # a generator, as tasks are


def test_a_failing_task_is_one_line_naming_its_error(echo_pickled_by_value, tmp_path):
    from anomaly_inspect.pipeline.ray_engine import EngineFailed

    with pytest.raises(EngineFailed, match="ValueError: cannot score img_000.txt") as err:
        list(make_engine("ray", workers=1).map(FailingTask(), _files(tmp_path, 2)))
    assert "\n" not in str(err.value)
