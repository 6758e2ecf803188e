"""The nearest-neighbour index times its own build (graph check and rebuilds included), and
PatchCore's fit_summary reports it as ``index_seconds`` for a bank fitted in this process only
(issue 14: evaluate's stage ``fit`` is the coreset and the index build together)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import anomaly_inspect.scorers.nn_index as nn_index
from anomaly_inspect.core import Features
from anomaly_inspect.scorers.nn_index import NearestNeighbours, ShardedNearestNeighbours
from anomaly_inspect.scorers.patchcore import PatchCore

PAUSE = 0.02  # seconds added to every HNSW graph build


def bank(n: int = 1536, d: int = 8, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_each_built_index_records_its_build_seconds(kind):
    nn = NearestNeighbours(kind).fit(bank())
    assert nn.resolved_kind == kind
    assert isinstance(nn.build_seconds, float) and nn.build_seconds > 0


def test_build_seconds_cover_the_graph_check_and_every_rebuild(monkeypatch):
    built = []
    graph = NearestNeighbours._graph

    def slow_graph(self, rows, m):
        built.append(m)
        time.sleep(PAUSE)
        return graph(self, rows, m)

    monkeypatch.setattr(NearestNeighbours, "_graph", slow_graph)
    monkeypatch.setattr(nn_index, "HNSW_MAX_EXCESS", -np.inf)  # every graph "misses": rebuilt
    x = bank()
    nn = NearestNeighbours("hnsw").fit(x, probes=x[:64])
    assert built == [16, 32, 64] and len(nn.graph_checks) == 3
    assert nn.build_seconds >= 3 * PAUSE


def test_a_restored_graph_is_no_build():
    x = bank()
    fitted = NearestNeighbours("hnsw").fit(x)
    restored = NearestNeighbours("hnsw").fit(x, graph=fitted.graph_state())
    assert restored.graph_m == 16 and restored.build_seconds is None


def test_sharded_index_times_its_shards():
    nn = ShardedNearestNeighbours(2, "flat").fit(bank())
    assert nn.build_seconds > 0


def test_fit_summary_reports_index_seconds_of_a_fit_not_of_a_load():
    train = Features(patches=bank(24 * 64).reshape(24, 8, 8, 8))
    fitted = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(train)
    summary = fitted.fit_summary()
    assert summary["index_seconds"] == round(fitted._nn.build_seconds, 3) > 0
    loaded = PatchCore(index="hnsw", progress=False)
    loaded.set_state(fitted.get_state())  # the graph restored: nothing built
    assert "index_seconds" not in loaded.fit_summary()
    flat = PatchCore(index="flat", progress=False)
    flat.set_state(fitted.get_state())  # a flat index is built at load, but no fit ran here
    assert flat._nn.build_seconds is not None and "index_seconds" not in flat.fit_summary()
