"""A tiny faiss wrapper for nearest-neighbour search over a memory bank.

``kind``: ``"flat"`` (exact L2), ``"hnsw"`` (graph index, M=16), ``"ivf"``
(inverted lists, ``nlist`` about 4*sqrt(N), ``nprobe`` probes) or ``"auto"``
(exact below ``auto_min_items`` memory items, HNSW above: exact search cost
grows with bank size x queries and dominates the pipeline for large banks). A bank of fewer
than :data:`APPROX_MIN_ITEMS` items is searched exactly whatever the kind (logged at info):
exact search is cheap there, and IVF's training needs more items than its lists.
Distances returned are Euclidean (the square root of faiss's squared L2).

The HNSW defaults (M=16, efConstruction=40, efSearch=16) are set for PatchCore's use: image
scores are made exact afterwards (``patchcore.exact_image_maxima``), so the graph only has
to be good enough for the patch maps. Against M=32 / 80 / 64, M=16 / 40 / 32 built 2.6x
and searched 2.3x faster on magnetic tile's 121,760-item bank; efSearch 16 searches 1.6-1.7x
faster again, with test-patch distances 0.45 % above exact on average (0.17 % at 32; pixel
AUROC within 0.001 on every masked category; README, "Backbone runtimes"). On some banks an
M=16 graph is far worse (bottle's cells bank: 14 % above exact, docs/coreset.md), so ``fit``
can check the graph on probe rows (training patches) and rebuild it with M doubled while it
misses by more than ``HNSW_MAX_EXCESS`` (relative to the probes' mean exact distance, or, where
the bank holds most probes and that mean is near 0, to a share of their distance to the
nearest other item: :func:`check_scale`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import faiss
import numpy as np

from ..choices import INDEX_KINDS  # defined there for the command line; imported from here too
from ..resources import Timer

log = logging.getLogger(__name__)

APPROX_MIN_ITEMS = 1024  # banks smaller than this are searched exactly (flat), whatever the kind
# An HNSW graph's links as faiss keeps them (``faiss.HNSW``): saved with a bank (not its
# vectors, which are the bank), so a loaded bank is searched on the graph it was fitted with.
GRAPH_LINKS = ("assign_probas", "cum_nneighbor_per_level", "levels", "offsets", "neighbors")
# The fit-time graph check: HNSW_CHECK_PROBES training patches are searched on the graph and
# exactly, and the graph is rebuilt with M doubled (up to HNSW_MAX_M) while its distances lie
# more than HNSW_MAX_EXCESS above the exact ones (mean difference over mean exact distance,
# or the floor HNSW_MIN_SCALE sets: check_scale).
# Default banks measure 0-1.1 % at efSearch 32 (the mean is heavy-tailed: one probe sample of
# bottle's gave 1.10 %, others 0.0 %), 0.7-2.6 % at 16 (bottle and pill, eight probe samples
# each); the broken graph on bottle's cells bank 14-16 % (docs/coreset.md).
HNSW_CHECK_PROBES = 1024
HNSW_MAX_EXCESS = 0.05
HNSW_MAX_M = 64
# The probes are training patches, so a bank that keeps most of them (coreset_ratio near 1)
# holds most probes and their mean exact distance falls to 0: the excess is then measured
# against no less than this share of the probes' mean distance to their second-nearest item
# (the nearest other item, for a probe the bank holds). Clustered synthetic banks measure a
# mean exact distance of 0.48 (coreset_ratio 0.5) to 0.72 (0.25) of that distance, so ordinary
# banks keep the plain mean; at 1.0 it is 0 (and the excess was up to 1e11).
HNSW_MIN_SCALE = 0.25
# faiss 1.15 computes exact distances for fewer than 128,000 queries with a kernel that, below
# about 1,000 queries, streams the whole bank once per query. One GEMM (faiss's BLAS path, its
# default from 20 queries on in earlier versions) is 4-20x faster there and equal above; the
# exact image maxima search a few hundred patches a batch (magnetic tile's `search` 37 -> 20 s).
BLAS_MIN_QUERIES = 20
# An exact search of fewer queries than this runs on one faiss thread: a few queries take
# milliseconds, and two threads synchronising per query cost more than they share (an
# explanation's 8-32 cells: 55-512 ms a search on two threads on a busy machine, 2-5 ms on one;
# 83 bottle images' explanations 1.3-7.6 s against 0.5 s)
ONE_THREAD_MAX_QUERIES = 64


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP threads set to ``n`` while inside (process-wide; restored on the way out)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextlib.contextmanager
def gemm_distances() -> Iterator[None]:
    """Exact faiss searches of :data:`BLAS_MIN_QUERIES` or more queries use one GEMM while
    inside (faiss's setting is process-wide; restored on the way out)."""
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(before, BLAS_MIN_QUERIES)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def nearest_distances(index: faiss.Index, queries: np.ndarray) -> np.ndarray:
    """Each query's distance to its nearest item in ``index`` (Euclidean)."""
    return np.sqrt(np.maximum(index.search(queries, 1)[0][:, 0], 0))


def graph_excess(index: faiss.Index, probes: np.ndarray, exact: np.ndarray,
                 scale: float | None = None) -> float:
    """How far ``index``'s nearest-neighbour distances for ``probes`` lie above the ``exact``
    ones: the mean difference over ``scale`` (by default the mean exact distance; the fit-time
    check passes :func:`check_scale`'s)."""
    scale = float(exact.mean()) if scale is None else scale
    return float((nearest_distances(index, probes) - exact).mean() / max(scale, 1e-12))


def check_scale(exact: np.ndarray, second: np.ndarray) -> float:
    """The scale the fit-time graph check measures misses against: the probes' mean ``exact``
    (nearest) distance, but no less than :data:`HNSW_MIN_SCALE` of their mean ``second``
    (second-nearest) distance. Where the bank holds the probes, their exact distance is 0 and a
    miss is then measured against the gap to the next item, not against 0."""
    return max(float(exact.mean()), HNSW_MIN_SCALE * float(second.mean()))


PROBE_STREAM = 0x5EA4C4  # the probe keys' random stream (with the seed, and a block's stream)


class ProbeSample:
    """A seeded uniform sample of ``size`` rows of blocks streamed past (the rows with the
    smallest random keys), for checking a search index on data it does not hold.

    ``stream``: the keys are drawn from a stream of their own (a distributed fit's batch
    number), so that samples of disjoint blocks, each drawn on its own stream where the block
    is, :meth:`merge` into the sample of their union, whichever worker drew which."""

    def __init__(self, size: int = HNSW_CHECK_PROBES, seed: int = 0, stream: int | None = None):
        self.size = size
        self._rng = np.random.default_rng((seed, PROBE_STREAM) if stream is None
                                          else (seed, PROBE_STREAM, stream))
        self._keys = np.empty(0)
        self.rows: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> ProbeSample:
        """Rows streamed past: each drawn a key."""
        return self._keep(self._rng.random(len(rows)), rows)

    def merge(self, other: ProbeSample) -> ProbeSample:
        """Another sample's rows with the keys they were drawn (rows this sample has not seen;
        ``other`` drew its keys on a stream of its own)."""
        return self if other.rows is None else self._keep(other._keys, other.rows)

    def _keep(self, keys: np.ndarray, rows: np.ndarray) -> ProbeSample:
        """The ``size`` rows with the smallest keys of the sample and ``rows`` (on equal keys,
        the sample's first)."""
        if self.rows is not None and len(self._keys) >= self.size:
            low = keys < self._keys.max()  # only these can enter the sample
            keys, rows = keys[low], rows[low]
        rows = np.asarray(rows, np.float32)
        keys = np.concatenate([self._keys, keys])
        rows = rows if self.rows is None else np.concatenate([self.rows, rows])
        keep = np.argsort(keys, kind="stable")[:self.size]
        self._keys, self.rows = keys[keep], np.ascontiguousarray(rows[keep])
        return self


def links_problem(n: int, entry: int, top: int, m: int, links: dict[str, np.ndarray]) -> str | None:
    """Why saved HNSW links (``faiss.HNSW``'s arrays, see :data:`GRAPH_LINKS`) cannot be a graph
    over ``n`` items, or None. Checks everything faiss's search trusts: each node's link slots
    (``offsets``) match its levels (``cum_nneighbor_per_level``), ids lie in the bank, the
    entry point lives on the top level, and a link on level l >= 1 leads to a node on level l
    (about 7 ms for 121,760 items)."""
    levels, offsets = links["levels"], links["offsets"]
    neighbors, cum = links["neighbors"], links["cum_nneighbor_per_level"]
    if any(a.ndim != 1 for a in links.values()):
        return "not 1-D"
    if not all(np.issubdtype(a.dtype, np.integer) for a in (levels, offsets, neighbors, cum)):
        return "not integers"
    if not 2 <= m <= 4 * HNSW_MAX_M:
        return f"M {m}"
    if len(levels) != n or n == 0 or levels.min() < 1:
        return "levels"
    n_levels = int(levels.max())
    if len(cum) < n_levels + 1 or cum[0] != 0 or (np.diff(cum) < 0).any():
        return "links per level"
    if (len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(neighbors)
            or not np.array_equal(np.diff(offsets), cum[levels])):
        return "offsets"
    if not (0 <= entry < n and top == n_levels - 1 and levels[entry] == n_levels):
        return "entry point"
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= n):
        return "neighbour ids"
    for level in range(1, n_levels):
        nodes = np.flatnonzero(levels > level)
        slots = (offsets[nodes] + cum[level])[:, None] + np.arange(cum[level + 1] - cum[level])
        to = neighbors[slots]
        if ((to != -1) & (levels[np.maximum(to, 0)] <= level)).any():
            return f"links on level {level}"
    return None


class NearestNeighbours:
    def __init__(self, kind: str = "flat", hnsw_m: int = 16, ef_search: int = 16,
                 ef_construction: int = 40, nprobe: int = 8, seed: int = 0,
                 query_batch: int = 65536, auto_min_items: int = 8192):
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind '{kind}'; choose from {', '.join(INDEX_KINDS)}")
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.nprobe = nprobe
        self.seed = seed
        self.query_batch = query_batch
        self.auto_min_items = auto_min_items
        self.index: faiss.Index | None = None

    def fit(self, bank: np.ndarray, probes: np.ndarray | None = None,
            graph: dict[str, np.ndarray] | None = None) -> NearestNeighbours:
        """Index ``bank``. With ``probes`` (rows like the queries, e.g. a sample of training
        patches), an HNSW graph is checked on them and rebuilt with M doubled while its
        distances miss the exact ones by more than ``HNSW_MAX_EXCESS`` (relative to
        :func:`check_scale`; ``graph_m``: the M
        built; ``graph_checks``: the excess of each graph tried). ``graph`` (from
        :meth:`graph_state` of an index fitted on this bank) restores that HNSW graph instead
        of building one: no build time (magnetic tile's 121,760 items: 3.7 -> 0.3 s to load a
        model), and the very graph the bank was fitted with (one built on two threads may
        differ from build to build, and with it the approximate distances).
        ``build_seconds``: the wall seconds the index took to build (an HNSW graph's check and
        rebuilds included), None where a ``graph`` was restored instead, so that a report can
        tell the index from the coreset that chose the bank."""
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        n = len(bank)
        kind = self.kind
        if kind == "auto":
            kind = "hnsw" if n >= self.auto_min_items else "flat"
        if kind != "flat" and n < APPROX_MIN_ITEMS:
            log.info("index %s: a bank of %d items (fewer than %d) is searched exactly (flat)",
                     kind, n, APPROX_MIN_ITEMS)
            kind = "flat"
        self.resolved_kind = kind
        self.graph_m: int | None = None
        self.graph_checks: list[float] = []
        self._bank = bank
        self._exact: faiss.Index | None = None
        self.build_seconds: float | None = None
        restored = None if graph is None or kind != "hnsw" else self._restored(bank, graph)
        if restored is not None:
            self.index = restored
            return self
        with Timer() as timer:
            self.index = self._checked_graph(bank, probes) if kind == "hnsw" else self._built(bank)
        self.build_seconds = timer.seconds
        return self

    def _built(self, bank: np.ndarray) -> faiss.Index:
        """A flat or IVF index (``resolved_kind``) over ``bank``."""
        n, d = bank.shape
        if self.resolved_kind == "flat":
            index = faiss.IndexFlatL2(d)
        else:
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
            quantizer = faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist)
            self._quantizer = quantizer  # keep alive: faiss does not own it
            index.cp.seed = self.seed
            index.train(bank)
            index.nprobe = self.nprobe
        index.add(bank)
        return index

    def _graph(self, bank: np.ndarray, m: int) -> faiss.Index:
        index = faiss.IndexHNSWFlat(bank.shape[1], m)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        index.add(bank)
        return index

    def _checked_graph(self, bank: np.ndarray, probes: np.ndarray | None) -> faiss.Index:
        m = self.hnsw_m
        index = self._graph(bank, m)
        if probes is not None and len(probes):
            probes = np.ascontiguousarray(probes, dtype=np.float32)
            d2 = faiss.downcast_index(index.storage).search(probes, 2)[0]  # HNSW: >= 1024 items
            exact, second = np.sqrt(np.maximum(d2, 0)).T
            scale = check_scale(exact, second)
            while True:
                self.graph_checks.append(round(graph_excess(index, probes, exact, scale), 6))
                if self.graph_checks[-1] <= HNSW_MAX_EXCESS or m >= HNSW_MAX_M:
                    break
                m *= 2
                index = self._graph(bank, m)
        self.graph_m = m
        return index

    def graph_state(self) -> dict[str, np.ndarray]:
        """An HNSW graph's links and header (entry point, top level, efConstruction, M), for
        :meth:`fit`'s ``graph``; empty for other indexes. About 140 bytes per item at M 16,
        against 4 bytes per dimension for the vectors."""
        if not isinstance(self.index, faiss.IndexHNSW):
            return {}
        h = self.index.hnsw
        out = {k: faiss.vector_to_array(getattr(h, k)) for k in GRAPH_LINKS}
        out["offsets"] = out["offsets"].astype(np.int64)
        out["header"] = np.array([h.entry_point, h.max_level, h.efConstruction,
                                  self.graph_m or self.hnsw_m], np.int64)
        return out

    def _restored(self, bank: np.ndarray, graph: dict[str, np.ndarray]) -> faiss.Index | None:
        """The HNSW index of ``graph`` over ``bank``, or None (with a warning: the graph is then
        built again) where the links cannot belong to this bank (:func:`links_problem`: faiss
        would read out of bounds on such links)."""
        n, d = bank.shape
        try:
            entry, top, ef_construction, m = (int(v) for v in graph["header"])
            links = {k: np.asarray(graph[k]) for k in GRAPH_LINKS}
            problem = links_problem(n, entry, top, m, links)
            if problem is None:
                index = faiss.IndexHNSWFlat(d, m)
                index.storage.add(bank)
                h = index.hnsw
                for key in GRAPH_LINKS:
                    dtype = faiss.vector_to_array(getattr(h, key)).dtype
                    faiss.copy_array_to_vector(np.ascontiguousarray(links[key], dtype),
                                               getattr(h, key))
                h.entry_point, h.max_level = entry, top
                h.efConstruction, h.efSearch = ef_construction, self.ef_search
                index.ntotal = n
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            log.warning("saved search graph does not fit the bank of %d items (%s): building it "
                        "again", n, problem)
            return None
        self.graph_m = m
        return index

    @property
    def is_exact(self) -> bool:
        return isinstance(self.index, faiss.IndexFlat)

    def search_exact(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Exact (distances, indices) for a few queries, whatever ``kind`` the main index is."""
        if self.is_exact:
            return self.search(queries, k)
        if self._exact is None:
            storage = getattr(self.index, "storage", None)
            if storage is not None:  # HNSW keeps the vectors in a flat index: search that, no copy
                self._exact = faiss.downcast_index(storage)
            else:
                self._exact = faiss.IndexFlatL2(self._bank.shape[1])
                self._exact.add(self._bank)
        few = len(queries) < ONE_THREAD_MAX_QUERIES
        with gemm_distances(), faiss_threads(1) if few else contextlib.nullcontext():
            d2, idx = self._exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.sqrt(np.maximum(d2, 0)), idx

    def search(self, queries: np.ndarray, k: int = 1, ef_search: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), each (Q, k), queried in batches to bound memory.
        ``ef_search`` replaces an HNSW graph's efSearch for this call only."""
        if self.index is None:
            raise RuntimeError("NearestNeighbours.search() called before fit()")
        params = None
        if ef_search is not None and isinstance(self.index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(efSearch=ef_search)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.index.ntotal)
        dist = np.empty((len(queries), k), np.float32)
        idx = np.empty((len(queries), k), np.int64)
        for s in range(0, len(queries), self.query_batch):
            d2, i = self.index.search(queries[s:s + self.query_batch], k, params=params)
            dist[s:s + len(d2)] = np.sqrt(np.maximum(d2, 0))
            idx[s:s + len(i)] = i
        return dist, idx


def merge_shard_results(results: list[tuple[np.ndarray, np.ndarray]], offsets: list[int],
                        k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (distances, local indices), each (Q, k_s), into the global k nearest:
    indices are shifted by each shard's ``offset``; ties keep the lower global index. A
    neighbour a shard did not find (an HNSW shard's label -1) stays -1, at distance inf."""
    dist = np.concatenate([np.where(i < 0, np.inf, d) for d, i in results], axis=1)
    idx = np.concatenate([np.where(i < 0, -1, i + o) for (_, i), o in zip(results, offsets, strict=True)],
                         axis=1)
    order = np.lexsort((idx, dist), axis=1)[:, :k] if dist.shape[1] else np.empty((len(dist), 0), int)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


class ShardedNearestNeighbours(NearestNeighbours):
    """The bank split into ``n_shards`` contiguous shards, each with its own index (``kind``),
    searched together by ``faiss.IndexShards`` (minimum distance merged; ids are global).

    For a bank too large for one index (or one machine: the same merge runs over shard
    actors, see ``merge_shard_results``). With exact shards the results equal the
    unsharded exact search.
    """

    def __init__(self, n_shards: int = 3, kind: str = "flat", **kwargs):
        if n_shards < 1:
            raise ValueError(f"n_shards must be >= 1, got {n_shards}")
        super().__init__(kind, **kwargs)
        self.n_shards = n_shards

    def fit(self, bank: np.ndarray, probes: np.ndarray | None = None,
            graph: dict[str, np.ndarray] | None = None) -> ShardedNearestNeighbours:
        """Index each shard (its graph is always built: ``graph`` is not used;
        ``build_seconds``: the shards' together)."""
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        parts = [p for p in np.array_split(bank, self.n_shards) if len(p)]
        params = {k: getattr(self, k) for k in ("hnsw_m", "ef_search", "ef_construction",
                                                 "nprobe", "seed", "query_batch", "auto_min_items")}
        self.shards = [NearestNeighbours(self.kind, **params).fit(p, probes) for p in parts]
        self.build_seconds = sum(s.build_seconds for s in self.shards)
        index = faiss.IndexShards(bank.shape[1], False, True)  # not threaded, successive ids
        for shard in self.shards:
            index.add_shard(shard.index)
        self.index = index
        self.resolved_kind = f"{len(parts)} x {'/'.join(sorted({s.resolved_kind for s in self.shards}))}"
        self._bank = bank
        self._exact = None
        return self

    @property
    def is_exact(self) -> bool:
        return all(s.is_exact for s in self.shards)
