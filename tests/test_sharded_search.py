"""Sharded nearest-neighbour search (faiss.IndexShards, and the merge shard actors use) equals
the unsharded search."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.scorers.nn_index import (
    NearestNeighbours,
    ShardedNearestNeighbours,
    merge_shard_results,
)


@pytest.mark.parametrize("n_shards", [3, 5])
@pytest.mark.parametrize("k", [1, 4])
def test_sharded_search_equals_unsharded(n_shards, k):
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(1000, 16)).astype(np.float32)
    queries = rng.normal(size=(200, 16)).astype(np.float32)
    d0, i0 = NearestNeighbours("flat").fit(bank).search(queries, k)
    sharded = ShardedNearestNeighbours(n_shards, "flat").fit(bank)
    assert len(sharded.shards) == n_shards and sharded.is_exact
    d1, i1 = sharded.search(queries, k)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-6)
    # the same merge across shards searched separately (as shard actors would)
    offsets = np.cumsum([0, *[len(s._bank) for s in sharded.shards[:-1]]]).tolist()
    d2, i2 = merge_shard_results([s.search(queries, k) for s in sharded.shards], offsets, k)
    np.testing.assert_array_equal(i2, i0)
    np.testing.assert_allclose(d2, d0, rtol=1e-6)


def test_merge_hand_checked():
    # two shards (offsets 0 and 2); query 0's nearest is shard 1's item 0 (global 2)
    a = (np.array([[3.0, 5.0]]), np.array([[1, 0]]))
    b = (np.array([[1.0, 4.0]]), np.array([[0, 1]]))
    d, i = merge_shard_results([a, b], [0, 2], 3)
    assert i.tolist() == [[2, 1, 3]] and d.tolist() == [[1.0, 3.0, 4.0]]


def test_sharded_patchcore_bank_scores_like_flat():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(300, 8)).astype(np.float32)
    q = rng.normal(size=(50, 8)).astype(np.float32)
    d0, _ = NearestNeighbours("flat").fit(bank).search(q)
    d1, _ = ShardedNearestNeighbours(4).fit(bank).search(q)
    assert np.array_equal(d0, d1)


def test_shard_actors_keep_a_missing_neighbour_missing():
    """An HNSW shard that finds fewer than k returns label -1; the merge must not shift it by
    the shard's offset into a real index of the shard before (shard 1 starts at 3: -1 + 3 = 2
    named bank item 2)."""
    import types

    from anomaly_inspect.pipeline.ray_shards import RayShardedSearch

    answers = [(np.array([[0.5, 2.0]], np.float32), np.array([[1, 0]])),
               (np.array([[1.0, 3.4e38]], np.float32), np.array([[0, -1]]))]

    class Shard:
        def __init__(self, answer):
            self.search = types.SimpleNamespace(remote=lambda queries, k: answer)

    search = RayShardedSearch.__new__(RayShardedSearch)
    search.actors, search.offsets, search.ntotal = [Shard(a) for a in answers], [0, 3], 5
    search._ray = types.SimpleNamespace(put=lambda x: x, get=lambda refs: refs)
    d, i = search.search(np.zeros((1, 4), np.float32), 4)
    assert i.tolist() == [[1, 3, 0, -1]]
    assert d[0, :3].tolist() == [0.5, 1.0, 2.0] and np.isinf(d[0, 3])
