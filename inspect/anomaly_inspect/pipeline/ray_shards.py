"""A memory bank searched as shards on Ray actors (banks larger than one worker's memory).

Each actor holds one contiguous shard in its own faiss index
(:class:`~..scorers.nn_index.NearestNeighbours`); a search sends the queries once through the
object store, every shard answers its k nearest, and the driver merges them by distance with
:func:`~..scorers.nn_index.merge_shard_results`, as ``faiss.IndexShards`` does in one process.
Exact shards give exactly the unsharded exact search.
"""

from __future__ import annotations

import numpy as np

from ..scorers.nn_index import NearestNeighbours, merge_shard_results
from .ray_engine import RayEngine


class _ShardActor:
    def __init__(self, shard: np.ndarray, kind: str, seed: int):
        self.nn = NearestNeighbours(kind, seed=seed).fit(shard)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.nn.search(queries, k)


class RayShardedSearch:
    """``n_shards`` actors, each searching one slice of ``bank``; ``search`` merges them."""

    def __init__(self, bank: np.ndarray, n_shards: int = 3, kind: str = "flat", seed: int = 0,
                 num_cpus: float = 0.5):
        engine = RayEngine()
        engine.start()  # connects as the engine does (keeping our SIGTERM handler)
        ray = engine.ray
        parts = [p for p in np.array_split(np.ascontiguousarray(bank, np.float32), n_shards)
                 if len(p)]
        self.offsets = np.cumsum([0, *[len(p) for p in parts[:-1]]]).tolist()
        actor = ray.remote(num_cpus=num_cpus)(_ShardActor)
        self.actors = [actor.remote(p, kind, seed) for p in parts]
        self.ntotal = len(bank)
        self._ray = ray

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances, global indices), each (Q, k), nearest first; a neighbour no shard found
        is index -1 at distance inf."""
        k = min(k, self.ntotal)
        ref = self._ray.put(np.ascontiguousarray(queries, np.float32))
        results = self._ray.get([a.search.remote(ref, k) for a in self.actors])
        return merge_shard_results(results, self.offsets, k)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
