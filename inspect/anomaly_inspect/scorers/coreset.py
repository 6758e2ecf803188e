"""Greedy k-center coreset (PatchCore's minimax facility location), two-round and streamed.

Each greedy step picks the point farthest from the current centres and updates
every point's distance to its nearest centre using only the newest centre
(a GEMV: ||x||^2 - 2 x.c + ||c||^2), so no N x N matrix is built; in blocks
larger than the cache (and round-1 chunks of which a large share is picked), only the
rows the new centre can reach (triangle inequality) are updated, with the same picks. Selection runs on a random
projection (default 128-d), as in PatchCore.

:class:`TwoRoundCoreset` bounds the cost for large banks without the collapse
of a plain chunked greedy at small ratios (Malkomes et al., NeurIPS 2015):

* round 1, as training patches arrive: rows are cut into windows of 16
  chunks, each window is shuffled and split into chunks of ``chunk_size`` rows,
  and the greedy keeps ``max(ratio, first_round_ratio)`` of every chunk - well
  above the chunk's share of the final bank when the ratio is small, so no
  chunk is covered coarsely. The default ``first_round_ratio="auto"`` keeps
  0.3 at small ratios and less as the ratio grows, so that one greedy over the
  union never costs more than :data:`ROUND_TWO_BUDGET` (at 10 % it keeps the
  ratio itself). Only the kept rows are stored, and the result does not depend
  on how the rows arrive (one array or batch by batch). With
  ``max_items``, the kept rows are halved (the same chunked greedy) whenever
  they pass 2 x ``max_items``, so memory stays bounded however many arrive.
* round 2: a greedy k-center pass over the union of the kept rows, down to
  ``ratio`` of all rows seen (at most ``max_items``). When round 1 kept only
  the target plus rounding (``keep_ratio == ratio``, no cap) it just drops each
  chunk's last picks. Where one greedy over the union would cost more than the
  budget (an explicit ``first_round_ratio`` above it, e.g. 0.2 at 10 %), the
  union is split into k-means cells, the greedy runs in each, and the picks
  are merged largest removed radius first (:func:`cells_greedy`); each cell
  gets about as many picks as a round-1 chunk, so round 2 costs about what
  round 1 did. Random chunks each span the whole distribution, so at 10 % their
  picks overlap (screw, 152-d: radius 22.3 against the exact greedy's 15.0, image
  AUROC 0.924 against 0.944 over five seeds); ``first_round_ratio=0.2`` with
  cells gives 0.941 there, but on the default embedding and on bottle it gains
  nothing for 2.6x the coreset time and an HNSW graph that needs more links
  (``docs/coreset.md``).

The covering radius is at most round 1's radius plus round 2's; with at least
``k`` picks per chunk each is at most 2x the optimal k-center radius, so the
two-round radius is within 4x the optimum (the greedy alone: 2x). The cells
carry no such bound where an optimal centre would serve two cells; they are
measured against the exact greedy in ``docs/coreset.md``.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..progress import Progress
from .base import sum_is_finite
from .params import check_number

log = logging.getLogger(__name__)

WINDOW_CHUNKS = 16  # round 1 shuffles windows of 16 chunks: its result is independent of how
#                     the rows arrive (one array, or batch by batch)
COMPACT_AT = 2  # with max_items, halve the kept rows whenever they pass 2 x max_items
AUTO_FIRST_ROUND = 0.3  # first_round_ratio="auto": round 1 keeps this share at small ratios...
ROUND_TWO_BUDGET = 0.003  # ...as long as keep x ratio stays under this: round 2 is one greedy over
#                           keep x N rows picking ratio x N (1 %: keep 0.3; 3 %: 0.1; from about
#                           5.5 % (sqrt 0.003) the ratio itself, so the default 10 % bank costs one
#                           chunked greedy, no round 2)
PRUNE_MIN_BYTES = 4 * 2**20  # greedy blocks this large skip rows the new centre cannot reach
#                              (8192 x 128 floats; round 1's 4096-row chunks are faster without)...
PRUNE_SHARE = (0.15, 2 * 2**20)  # ...unless at least 15 % of a block of at least 2 MiB is picked:
#   late steps then reach few rows (a 4096 x 128 chunk: 30 % picked 0.70x the time, 10 % 1.06x);
#   smaller blocks stay unpruned, as the bound's fixed cost per step outweighs a short GEMV
#   (1600 rows: 30 % picked 1.21x)
PRUNE_GATHER_COST = 8  # gathering a row from memory costs about 8 rows of a streamed GEMV
PRUNE_SLACK = 1e-3  # relative (and, times the largest squared norm, absolute) slack on that bound
_WARNED_RATIOS: set[float] = set()  # ratios warned about for first_round_ratio None (once each
#                                     per process: bench-coreset's one_round rows, one per ratio)


def projection_matrix(d: int, dim: int | None, seed: int) -> torch.Tensor | None:
    """(d, dim) Gaussian random projection, or None (identity) if dim is None or >= d."""
    if dim is None or dim >= d:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(d, dim, generator=gen) / math.sqrt(dim)


def project_rows(x: np.ndarray, proj: np.ndarray | None) -> np.ndarray:
    """The rows ``x`` on ``proj`` (None: as they are), as contiguous float32, always on one
    BLAS thread: OpenBLAS's sgemm rounds differently with more threads once the width passes
    a few hundred (472-d: 5e-5), and the picks must not depend on the thread count."""
    x = np.asarray(x, dtype=np.float32)
    if proj is None:
        return np.ascontiguousarray(x)
    with threadpool_limits(1):
        return np.ascontiguousarray(x @ proj)


def check_finite_rows(rows: np.ndarray, owner: str) -> None:
    """Refuse rows holding NaN or Inf: a NaN distance in the greedy overwrites the mark of the
    rows already picked, so picks repeat and the bank holds NaN."""
    if rows.size and not sum_is_finite(rows):  # the sum can also overflow: count for sure
        bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"{owner}: {int(bad.sum())} of {len(rows)} rows hold NaN or Inf values")


def random_projection(x: torch.Tensor, dim: int | None, seed: int) -> torch.Tensor:
    """Gaussian random projection to ``dim`` dimensions (identity if dim is None or >= D)."""
    proj = projection_matrix(x.shape[-1], dim, seed)
    return x if proj is None else x @ proj


def _greedy(x: np.ndarray, k: int, start: int, progress: Progress | None = None,
            threads: int = 1) -> np.ndarray:
    """Greedy k-center on one (n, d) float32 block; returns k indices in pick order.

    Each step is one GEMV over the block, on ``threads`` BLAS threads: two halve a
    large block's (each core streams half of it), while the small chunks of round 1
    run one per thread instead (spinning BLAS threads collapse when a core is busy).
    """
    with threadpool_limits(threads):
        return _greedy_loop(x, k, start, progress)


def _greedy_loop(x: np.ndarray, k: int, start: int, progress: Progress | None) -> np.ndarray:
    greedy = _Greedy(x, start, k)
    if progress is not None:
        progress.update(1)
    return greedy.extend(k, progress).picks


def _sq_distances(x: np.ndarray, sq: np.ndarray, c: np.ndarray, cc: float) -> np.ndarray:
    """Squared distances from the rows ``x`` (squared norms ``sq``) to ``c`` (``cc``): one
    GEMV, ||x||^2 - 2 x.c + ||c||^2, the same formula for any subset of rows (BLAS may round
    a subset's dot products differently in the last bit, which can swap near-tied picks)."""
    d = x @ c
    d *= -2.0
    d += sq
    d += cc
    return d


class _Greedy:
    """A greedy k-center on one (n, d) block that can be extended step by step: ``picks``
    in pick order and ``values``, each pick's squared distance to the centres before it
    (the covering radius it removed; the start has inf).

    Blocks of at least ``PRUNE_MIN_BYTES`` (larger than the L2 cache, where every GEMV
    streams from memory), and round-1-sized blocks of which the caller means to pick a
    large share (``picks``, ``PRUNE_SHARE``: late centres reach few rows), update only
    the rows the new centre can reach: a row whose nearest centre a lies at
    ``dist(a, c) >= 2 dist(x, a)`` from the new centre c is no nearer to c (triangle
    inequality), so it is skipped (Elkan's bound). The rows
    that are checked get the same formula as a full GEMV, so the picks are the same (tested
    on real and random data; BLAS may round a subset's dot products differently in the last
    bit, which can swap two picks tied to that bit, e.g. duplicate rows); a small slack on
    the bound keeps rounding from skipping a row that moves.
    Late in a greedy only a few per cent of the rows are checked (docs/coreset.md).
    """

    def __init__(self, x: np.ndarray, start: int, picks: int = 0):
        self.x = x
        self.sq = np.einsum("ij,ij->i", x, x)
        c = x[start]
        self.min_d = _sq_distances(x, self.sq, c, c @ c)
        self.min_d[start] = -np.inf  # picked rows are never picked again (see extend)
        self._picks = [start]
        self._values = [np.inf]
        share, min_bytes = PRUNE_SHARE
        self.pruned = x.nbytes >= PRUNE_MIN_BYTES or (x.nbytes >= min_bytes
                                                      and picks >= share * len(x))
        if self.pruned:
            # a row may move to a new centre only if dist^2(its centre, new) <= lim
            self._slack = np.float32(PRUNE_SLACK * float(self.sq.max(initial=0.0)))
            self.lim = self._bound(self.min_d)
            self.assign = np.zeros(len(x), np.intp)  # take() converts other indices first
            self.centres = np.empty((64, x.shape[1]), np.float32)
            self.centres[0] = c
            self.csq = np.empty(64, np.float32)
            self.csq[0] = c @ c

    def _bound(self, min_d: np.ndarray) -> np.ndarray:
        return 4.0 * (1.0 + PRUNE_SLACK) * min_d + self._slack

    @property
    def picks(self) -> np.ndarray:
        return np.asarray(self._picks, dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self._values)

    @property
    def done(self) -> bool:
        return len(self._picks) >= len(self.x)

    def extend(self, k: int, progress: Progress | None = None) -> _Greedy:
        """Pick until there are ``k`` picks (at most one per row)."""
        x, sq, min_d = self.x, self.sq, self.min_d
        k = min(k, len(x))
        pending = 0
        for _ in range(len(self._picks), k):
            i = int(min_d.argmax())
            self._picks.append(i)
            self._values.append(float(min_d[i]))
            if self.pruned:
                self._update_pruned(x[i])
            else:
                np.minimum(min_d, _sq_distances(x, sq, x[i], x[i] @ x[i]), out=min_d)
            min_d[i] = -np.inf  # picked: never again, even once every row is covered (duplicates)
            pending += 1
            if progress is not None and pending == 1024:
                progress.update(pending)
                pending = 0
        if progress is not None and pending:
            progress.update(pending)
        return self

    def _update_pruned(self, c: np.ndarray) -> None:
        t = len(self._picks) - 1  # the new centre's number
        if t == len(self.centres):
            self.centres = np.concatenate([self.centres, np.empty_like(self.centres)])
            self.csq = np.concatenate([self.csq, np.empty_like(self.csq)])
        cc = c @ c
        dc = _sq_distances(self.centres[:t], self.csq[:t], c, cc)
        rows = np.flatnonzero(dc.take(self.assign) <= self.lim)
        if len(rows) * PRUNE_GATHER_COST > len(self.x):  # early on: one GEMV beats the gather
            d = _sq_distances(self.x, self.sq, c, cc)
            moved = np.flatnonzero(d < self.min_d)
            d = d[moved]
        else:
            # take(): the same rows as x[rows], gathered in about 60 % of the time
            d = _sq_distances(self.x.take(rows, axis=0), self.sq.take(rows), c, cc)
            better = d < self.min_d.take(rows)
            moved, d = rows[better], d[better]
        self.min_d[moved] = d
        self.lim[moved] = self._bound(d)
        self.assign[moved] = t
        self.centres[t] = c
        self.csq[t] = cc


def kmeans_cells(x: np.ndarray, n_cells: int, rng: np.random.Generator,
                 iterations: int = 10, per_cell: int = 64) -> np.ndarray:
    """Each row's cell among ``n_cells`` k-means cells (Lloyd on a sample of ``per_cell`` rows
    per cell, then every row to its nearest centroid). Written out rather than faiss's so
    that it runs on one BLAS thread: the cells, hence the picks, must not depend on the
    thread count."""
    n = len(x)
    sample = x[rng.choice(n, min(n, per_cell * n_cells), replace=False)]
    centroids = sample[rng.choice(len(sample), n_cells, replace=False)].copy()

    def nearest(rows: np.ndarray) -> np.ndarray:
        d = np.einsum("ij,ij->i", centroids, centroids)[None] - 2.0 * (rows @ centroids.T)
        return d.argmin(1)

    with threadpool_limits(1):
        for _ in range(iterations):
            assign = nearest(sample)
            counts = np.bincount(assign, minlength=n_cells)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, sample)
            filled = counts > 0  # an empty cell keeps its centroid
            centroids[filled] = sums[filled] / counts[filled, None]
        return np.concatenate([nearest(x[s:s + 65536]) for s in range(0, n, 65536)])


def cells_greedy(x: np.ndarray, k: int, n_cells: int, rng: np.random.Generator,
                 threads: int = 1, progress: Progress | None = None, grow: float = 1.5) -> np.ndarray:
    """``k`` rows of ``x`` by the greedy k-center run in k-means cells, picks merged by radius.

    Each cell's greedy covers its own rows; the picks of all cells are taken largest removed
    radius first, which is what one greedy over all rows would do if no row were covered
    from a neighbouring cell. Cells are extended lazily (start at their share of ``k``, grow
    by ``grow``) until every cell's next pick would fall below the k-th largest radius, so
    the result is the top ``k`` of the cells' full greedy sequences. Cells run one per
    thread; the draws are made up front, so the picks do not depend on the thread count.
    Returns indices into ``x`` (merge order)."""
    n_cells = max(1, min(n_cells, k))
    cell = kmeans_cells(x, n_cells, rng)
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_cells + 1))
    members = [order[bounds[j]:bounds[j + 1]] for j in range(n_cells) if bounds[j + 1] > bounds[j]]
    starts = [int(rng.integers(len(m))) for m in members]
    share = k / len(x)
    done = 0

    def first(m: np.ndarray, s: int) -> _Greedy:  # each cell's share of k to begin with
        picks = math.ceil(share * len(m))
        return _Greedy(np.ascontiguousarray(x[m]), s, picks).extend(picks)

    with threadpool_limits(1), ThreadPoolExecutor(max(1, min(threads, len(members)))) as pool:
        greedies = list(pool.map(first, members, starts))
        while True:
            values = np.concatenate([g.values for g in greedies])
            if progress is not None and min(len(values), k) > done:
                progress.update(min(len(values), k) - done)
                done = min(len(values), k)
            kth = np.partition(values, len(values) - k)[len(values) - k] if len(values) >= k \
                else -np.inf
            todo = [g for g in greedies if not g.done and g.values[-1] >= kth]
            if not todo:
                break
            list(pool.map(lambda g: g.extend(math.ceil(len(g.picks) * grow) + 1), todo))
    picks = np.concatenate([m[g.picks] for m, g in zip(members, greedies, strict=True)])
    return picks[np.argsort(-values, kind="stable")[:k]]


def greedy_coreset(
    features: np.ndarray, n_select: int, projection_dim: int | None = 128, seed: int = 0,
    start: int | None = None, progress: Progress | None = None,
) -> np.ndarray:
    """Exact greedy k-center over all points; returns ``n_select`` indices in pick order."""
    n = len(features)
    n_select = int(min(max(n_select, 1), n))
    proj = projection_matrix(features.shape[1], projection_dim, seed)
    x = project_rows(features, None if proj is None else proj.numpy())  # as TwoRoundCoreset does
    if start is None:
        start = int(np.random.default_rng(seed).integers(n))
    return _greedy(x, n_select, start, progress, torch.get_num_threads())


def coreset_size(n: int, ratio: float, max_items: int | None = None) -> int:
    size = max(1, int(round(n * ratio)))
    return min(size, max_items) if max_items else size


def covering_radius(points: np.ndarray, centres: np.ndarray, block: int = 65536) -> float:
    """Largest distance from a point to its nearest centre (exact, faiss, in blocks)."""
    import faiss

    index = faiss.IndexFlatL2(centres.shape[1])
    index.add(np.ascontiguousarray(centres, np.float32))
    worst = 0.0
    for s in range(0, len(points), block):
        d2, _ = index.search(np.ascontiguousarray(points[s:s + block], np.float32), 1)
        worst = max(worst, float(d2.max()))
    return math.sqrt(max(worst, 0.0))


def check_first_round_ratio(value: float | str | None, owner: str = "coreset") -> None:
    """Raise unless ``value`` is a share in (0, 1], ``"auto"`` or None."""
    check_number(owner, "first_round_ratio", value, 0, 1, low_open=True, allowed=(None, "auto"))


class TwoRoundCoreset:
    """Streamed two-round greedy coreset (see the module docstring).

    ``add`` takes blocks of (M, D) rows in any number of calls; ``finish``
    returns the positions of the coreset's rows among all rows added
    (0-based, sorted). ``chunk_size=None`` is the exact greedy over all rows
    (round 1 keeps every row); ``first_round_ratio=None`` turns round 1's
    oversampling off (the plain chunked greedy, which collapses at small
    ratios; kept for comparison). ``seed`` drives the projection, the chunking
    and the start points.
    """

    def __init__(self, ratio: float = 0.1, max_items: int | None = None,
                 chunk_size: int | None = 4096, first_round_ratio: float | str | None = "auto",
                 projection_dim: int | None = 128, seed: int = 0, keep_rows: bool = False):
        if not ratio > 0:
            raise ValueError(f"coreset ratio must be > 0, got {ratio}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        check_first_round_ratio(first_round_ratio)
        self.ratio = ratio
        self.max_items = max_items
        self.chunk_size = chunk_size
        self.first_round_ratio = first_round_ratio
        self.projection_dim = projection_dim
        self.seed = seed
        self.keep_rows = keep_rows
        self._rng = np.random.default_rng(seed)
        self._proj: np.ndarray | None = None
        self._dim: int | None = None
        self._proj_ready = False
        self._processed = 0  # rows through round 1 (the rest wait in the buffer)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._positions: list[np.ndarray] = []  # per chunk, in pick order
        self._projected: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []  # the kept rows themselves, with keep_rows
        self._selection: np.ndarray | None = None  # round 2's result, once computed

    @property
    def keep_ratio(self) -> float:
        """The share of every chunk that round 1 keeps (never less than ``ratio``)."""
        first = self.first_round_ratio
        if first == "auto":
            first = min(AUTO_FIRST_ROUND, ROUND_TWO_BUDGET / self.ratio)
        return min(1.0, max(self.ratio, first or 0.0))

    def round_two_cells(self, union: int) -> int:
        """How many k-means cells round 2 splits a union of ``union`` rows into: one (a
        single greedy) while that costs at most ``ROUND_TWO_BUDGET`` x N^2 row-steps,
        otherwise as many as make each cell's greedy as long as a round-1 chunk's, so that
        round 2 costs about what round 1 did."""
        target, n = self.target, self.n_seen
        # the shares as configured: round 1 rounds every chunk's picks up, which must not tip
        # the 1 % bank (0.01 x 0.3, exactly the budget) into cells
        cost = min(self.ratio, target / n) * min(self.keep_ratio, union / n)
        if self.chunk_size is None or cost <= ROUND_TWO_BUDGET + 1e-12:
            return 1
        return math.ceil(target / math.ceil(self.keep_ratio * self.chunk_size))

    def _proj_for(self, x: np.ndarray) -> None:
        """Draw the projection for rows like ``x`` (once, before any thread needs it)."""
        if not self._proj_ready:
            proj = projection_matrix(x.shape[1], self.projection_dim, self.seed)
            self._proj = None if proj is None else proj.numpy()
            self._proj_ready = True

    def _project(self, x: np.ndarray) -> np.ndarray:
        """The rows on the coreset's projection (:func:`project_rows`)."""
        self._proj_for(x)
        return project_rows(x, self._proj)

    def add(self, rows: np.ndarray, progress: Progress | None = None) -> None:
        """Round 1 on a block of rows (any size: blocks are re-cut into windows)."""
        n = len(rows)
        if n == 0:
            return
        if self._dim is not None and rows.shape[1] != self._dim:
            raise ValueError(f"rows of dim {rows.shape[1]} added to a coreset of dim {self._dim}")
        check_finite_rows(rows, "TwoRoundCoreset.add")
        self._dim = rows.shape[1]
        self._selection = None
        if self.chunk_size is None:  # exact greedy: keep every row for round 2
            self._keep_chunk(np.arange(n), np.asarray(rows, np.float32), None)
            self._processed += n
            if progress is not None:
                progress.update(n)
            return
        window = self.chunk_size * WINDOW_CHUNKS
        start = 0
        if self._buffer:  # complete the pending window first
            take = min(n, window - self._buffered)
            self._buffer.append(np.array(rows[:take], np.float32))
            self._buffered += take
            start = take
            if self._buffered == window:
                self._round_one(np.concatenate(self._buffer), progress)
                self._buffer, self._buffered = [], 0
        while n - start >= window:
            self._round_one(rows[start:start + window], progress)
            start += window
        if start < n:  # the caller may reuse its array: keep a copy
            self._buffer.append(np.array(rows[start:], np.float32))
            self._buffered += n - start

    def add_round_one(self, chunks: list[np.ndarray], rows: np.ndarray, n: int) -> None:
        """Round 1 done elsewhere (a worker, :func:`round_one`) on a block of ``n`` rows:
        ``chunks`` holds each chunk's picks (positions in the block, pick order) and ``rows``
        the picked rows, chunk after chunk. The block counts as the next ``n`` rows."""
        if self._buffered:
            raise ValueError("add_round_one() cannot follow add() of a partial window")
        if self._dim is not None and rows.shape[1] != self._dim:
            raise ValueError(f"rows of dim {rows.shape[1]} added to a coreset of dim {self._dim}")
        check_finite_rows(rows, "TwoRoundCoreset.add_round_one")
        self._dim = rows.shape[1]
        self._selection = None
        start = 0
        for pos in chunks:
            self._keep_chunk(np.asarray(pos, np.int64), rows[start:start + len(pos)], None)
            start += len(pos)
        self._processed += n
        if self.chunk_size and self.max_items and self._union_size > COMPACT_AT * self.max_items:
            self._compact()

    def flush(self, progress: Progress | None = None) -> None:
        """Round 1 on the rows still waiting for a full window, once no more rows will come
        (``finish`` does it otherwise; this lets a caller count them on its progress bar)."""
        if self._buffer:
            self._round_one(np.concatenate(self._buffer), progress)
            self._buffer, self._buffered = [], 0

    def _round_one(self, rows: np.ndarray, progress: Progress | None) -> None:
        """Greedy in random chunks of one window of rows; keep ``keep_ratio`` of each chunk.

        The chunks are independent, so they run on ``torch.get_num_threads()`` threads, one
        single-threaded greedy each (numpy releases the GIL in its loops); the random draws
        are made up front, so the result does not depend on the thread count."""
        n = len(rows)
        parts = np.array_split(self._rng.permutation(n), math.ceil(n / self.chunk_size))
        starts = [int(self._rng.integers(len(idx))) for idx in parts]
        self._proj_for(rows)

        def pick(idx: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
            x = self._project(rows[idx])  # chunk by chunk: no (N, dim) copy of the window
            k = min(len(idx), math.ceil(self.keep_ratio * len(idx)))
            # a chunk kept whole is still put in greedy order: round 2 may take its prefix
            return x, _greedy_loop(x, k, start, None)

        threads = max(1, min(torch.get_num_threads(), len(parts)))
        with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
            for idx, (x, sel) in zip(parts, pool.map(pick, parts, starts), strict=True):
                self._keep_chunk(idx[sel], rows[idx[sel]], x[sel])
                if progress is not None:
                    progress.update(len(idx))
        self._processed += n
        if self.max_items and self._union_size > COMPACT_AT * self.max_items:
            self._compact()

    def _keep_chunk(self, idx: np.ndarray, rows: np.ndarray, projected: np.ndarray | None) -> None:
        self._positions.append(self._processed + idx)
        self._projected.append(self._project(rows) if projected is None else projected)
        if self.keep_rows:
            self._rows.append(np.asarray(rows, np.float32))

    @property
    def _union_size(self) -> int:
        return sum(len(p) for p in self._positions)

    def _compact(self) -> None:
        """Halve the kept rows, so that memory stays bounded by ``max_items`` however many
        rows arrive: the kept chunks, in random order, are grouped into about ``chunk_size``
        rows and the greedy keeps half of each group. Groups are freed as they are done, so
        no copy of the whole union is ever made."""
        old = list(zip(self._positions, self._projected,
                       self._rows if self.keep_rows else [None] * len(self._positions),
                       strict=True))
        self._positions, self._projected, self._rows = [], [], []
        order = self._rng.permutation(len(old))
        start = 0
        while start < len(order):
            end, size = start + 1, len(old[order[start]][0])
            while end < len(order) and size + len(old[order[end]][0]) <= self.chunk_size:
                size += len(old[order[end]][0])
                end += 1
            parts = [old[g] for g in order[start:end]]
            for g in order[start:end]:
                old[g] = None  # freed once this group is done
            start = end
            projected = np.concatenate([p[1] for p in parts])
            sel = _greedy(projected, math.ceil(len(projected) / 2),
                          int(self._rng.integers(len(projected))))
            self._positions.append(np.concatenate([p[0] for p in parts])[sel])
            self._projected.append(projected[sel])
            if self.keep_rows:
                self._rows.append(np.concatenate([p[2] for p in parts])[sel])

    @property
    def n_seen(self) -> int:
        """Rows added: through round 1 or waiting in the buffer."""
        return self._processed + self._buffered

    @property
    def target(self) -> int:
        return coreset_size(self.n_seen, self.ratio, self.max_items)

    @property
    def greedy_round_two(self) -> bool:
        """Whether ``finish`` runs a greedy pass: round 1 kept more than the target plus its
        rounding (one pick per chunk), because it oversampled, kept every row
        (``chunk_size=None``) or ``max_items`` caps the target. Known once round 1 has seen
        every row (after ``flush``); reading it never runs round 1 itself."""
        if self._buffered:
            raise ValueError("greedy_round_two is known once round 1 has seen every row: "
                             "call flush() first")
        excess = self._union_size - self.target
        if excess <= 0:
            return False
        return self.chunk_size is None or (len(self._positions) > 1
                                           and excess > len(self._positions))

    def _select(self, progress: Progress | None) -> np.ndarray:
        """Round 2 (once): indices into the union of round 1's picks."""
        self.flush()
        if not self._positions:
            raise ValueError("no rows were added to the coreset")
        if self._selection is None:
            self._warn_no_oversampling()
            self._selection = self._round_two(progress)
        return self._selection

    def _warn_no_oversampling(self) -> None:
        """Warn (once per ratio and process) where ``first_round_ratio`` None left round 1,
        here or on workers, cutting the rows into chunks without the oversampling ``"auto"``
        gives below sqrt(:data:`ROUND_TWO_BUDGET`): the plain chunked greedy collapses at small
        ratios (1 %: 41 picks in a 4096-row chunk). Rows that fit one chunk get the exact greedy."""
        ratio, chunk = self.ratio, self.chunk_size
        if (chunk is None or self.n_seen <= chunk or self.first_round_ratio is not None
                or ratio >= math.sqrt(ROUND_TWO_BUDGET) or ratio in _WARNED_RATIOS):
            return
        _WARNED_RATIOS.add(ratio)
        log.warning("coreset ratio %g with first_round_ratio None: round 1 does not oversample (it "
                    "keeps %d of every %d-row chunk), so the memory bank may cover the patches "
                    "badly; first_round_ratio 'auto' (the default) avoids it", ratio,
                    math.ceil(ratio * chunk), chunk)

    def _round_two(self, progress: Progress | None) -> np.ndarray:
        target = self.target
        sizes = [len(p) for p in self._positions]
        if sum(sizes) <= target:
            return np.arange(sum(sizes))
        if self.chunk_size is not None and len(sizes) == 1:
            return np.arange(target)  # one chunk: the exact greedy's prefix
        if not self.greedy_round_two:
            # only rounding to drop: every chunk's first pick, then every chunk's second, ...
            offsets = np.cumsum([0, *sizes[:-1]])
            ranked = np.full((len(sizes), max(sizes)), -1, dtype=np.int64)
            for g, (o, k) in enumerate(zip(offsets, sizes, strict=True)):
                ranked[g, :k] = o + np.arange(k)
            order = ranked.T.reshape(-1)
            return order[order >= 0][:target]
        x = np.concatenate(self._projected)
        cells = self.round_two_cells(len(x))
        if cells > 1:
            return cells_greedy(x, target, cells, self._rng, torch.get_num_threads(), progress)
        return _greedy(x, target, int(self._rng.integers(len(x))), progress, torch.get_num_threads())

    def finish(self, progress: Progress | None = None) -> np.ndarray:
        """The positions (sorted) of the final coreset among all rows added."""
        sel = self._select(progress)
        return np.sort(np.concatenate(self._positions)[sel])

    def finish_rows(self, progress: Progress | None = None) -> np.ndarray:
        """The final coreset's rows (needs ``keep_rows=True``), in position order."""
        return self.finish_positions_rows(progress)[1]

    def finish_positions_rows(self, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, rows) of the final coreset, in position order (needs ``keep_rows=True``):
        row ``i`` is the ``positions[i]``-th row added, so callers can say where it came from."""
        if not self.keep_rows:
            raise ValueError("TwoRoundCoreset(keep_rows=False) keeps positions only")
        sel = self._select(progress)
        positions = np.concatenate(self._positions)[sel]
        order = np.argsort(positions, kind="stable")
        return positions[order], self._take_rows(sel[order])

    def _take_rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the union of the kept rows, gathered chunk by chunk (no copy of
        the whole union)."""
        starts = np.cumsum([0] + [len(r) for r in self._rows])
        chunk = np.searchsorted(starts, idx, side="right") - 1
        out = np.empty((len(idx), self._rows[0].shape[1]), np.float32)
        for c in np.unique(chunk):
            where = np.flatnonzero(chunk == c)
            out[where] = self._rows[c][idx[where] - starts[c]]
        return out


def round_one(rows: np.ndarray, ratio: float = 0.1, chunk_size: int | None = 4096,
              first_round_ratio: float | str | None = "auto", projection_dim: int | None = 128,
              seed: int = 0, stream: int = 0) -> list[np.ndarray]:
    """Round 1 of :class:`TwoRoundCoreset` on one block of rows, for a worker: each chunk's
    picks (positions in ``rows``, pick order). The projection is the coreset's (``seed``);
    the chunking and start points are drawn from ``(seed, stream)``, so each block (stream)
    gets its own draws whichever worker runs it. Feed the result to ``add_round_one``."""
    coreset = TwoRoundCoreset(ratio, None, chunk_size, first_round_ratio, projection_dim, seed)
    coreset._rng = np.random.default_rng([seed, stream])
    coreset.add(rows)
    coreset.flush()
    return coreset._positions


def two_round_coreset(
    features: np.ndarray,
    ratio: float = 0.1,
    max_items: int | None = None,
    chunk_size: int | None = 4096,
    first_round_ratio: float | str | None = "auto",
    projection_dim: int | None = 128,
    seed: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """Sorted indices of a two-round greedy coreset of ``ratio`` of the rows of ``features``."""
    coreset = TwoRoundCoreset(ratio, max_items, chunk_size, first_round_ratio, projection_dim, seed)
    coreset.add(features, progress)
    return coreset.finish()
