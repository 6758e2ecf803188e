"""Greedy k-center coreset (PatchCore's minimax facility location), vectorised.

Each step picks the point farthest from the current centres and updates
every point's distance to its nearest centre using only the newest centre
(a GEMV: ||x||^2 - 2 x.c + ||c||^2), so no N x N matrix is built. Selection
runs on a random projection (default 128-d), as in PatchCore.

:func:`chunked_greedy_coreset` bounds the cost for large banks: the points
are randomly partitioned into chunks of ``chunk_size`` and the greedy runs in
each chunk, so the cost is ``ratio * N * chunk_size * d`` - linear in N
instead of quadratic - and each chunk stays in the CPU cache.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..progress import Progress


def projection_matrix(d: int, dim: int | None, seed: int) -> torch.Tensor | None:
    """(d, dim) Gaussian random projection, or None (identity) if dim is None or >= d."""
    if dim is None or dim >= d:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(d, dim, generator=gen) / math.sqrt(dim)


def random_projection(x: torch.Tensor, dim: int | None, seed: int) -> torch.Tensor:
    """Gaussian random projection to ``dim`` dimensions (identity if dim is None or >= D)."""
    proj = projection_matrix(x.shape[-1], dim, seed)
    return x if proj is None else x @ proj


def _greedy(x: np.ndarray, k: int, start: int) -> np.ndarray:
    """Greedy k-center on one (n, d) float32 block; returns k indices in pick order.

    Each step is one GEMV over the block, so the block should fit in the CPU
    cache (a 4096 x 128 float32 chunk is 2 MB); numpy's BLAS call has far less
    per-step overhead than torch here, which matters for thousands of tiny steps.
    BLAS runs single-threaded: a GEMV this small gains nothing from a second
    thread, and spinning thread pools collapse when the cores are shared.
    """
    with threadpool_limits(1):
        return _greedy_loop(x, k, start)


def _greedy_loop(x: np.ndarray, k: int, start: int) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    selected = np.empty(k, dtype=np.int64)
    selected[0] = start
    c = x[start]
    min_d = sq - 2.0 * (x @ c) + c @ c
    for t in range(1, k):
        i = int(min_d.argmax())
        selected[t] = i
        c = x[i]
        d = x @ c
        d *= -2.0
        d += sq
        d += c @ c
        np.minimum(min_d, d, out=min_d)
    return selected


def greedy_coreset(
    features: np.ndarray, n_select: int, projection_dim: int | None = 128, seed: int = 0,
    start: int | None = None,
) -> np.ndarray:
    """Exact greedy k-center over all points; returns ``n_select`` indices in pick order."""
    n = len(features)
    n_select = int(min(max(n_select, 1), n))
    x = random_projection(torch.from_numpy(np.ascontiguousarray(features, np.float32)),
                          projection_dim, seed).numpy()
    if start is None:
        start = int(np.random.default_rng(seed).integers(n))
    return _greedy(np.ascontiguousarray(x), n_select, start)


def coreset_size(n: int, ratio: float, max_items: int | None = None) -> int:
    size = max(1, int(round(n * ratio)))
    return min(size, max_items) if max_items else size


def chunked_greedy_coreset(
    features: np.ndarray,
    ratio: float = 0.1,
    max_items: int | None = None,
    chunk_size: int | None = 4096,
    projection_dim: int | None = 128,
    seed: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """Indices of a greedy coreset of about ``ratio * N`` points (at most ``max_items``).

    With ``chunk_size=None`` (or N <= chunk_size) this is the exact greedy.
    """
    n = len(features)
    target = coreset_size(n, ratio, max_items)
    if target >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    proj = projection_matrix(features.shape[1], projection_dim, seed)
    proj = None if proj is None else proj.numpy()
    groups = 1 if chunk_size is None or n <= chunk_size else math.ceil(n / chunk_size)
    chunks = np.array_split(rng.permutation(n), groups)
    k = math.ceil(target / groups)
    picks = []
    for idx in chunks:
        k_i = min(k, len(idx))
        # project chunk by chunk: no second (N, dim) copy of the features in memory
        x = np.asarray(features[idx], dtype=np.float32)
        x = np.ascontiguousarray(x if proj is None else x @ proj)
        sel = _greedy(x, k_i, int(rng.integers(len(idx))))
        picks.append(idx[sel])
        if progress is not None:
            progress.update(k_i)
    # rank-major order (every chunk's first pick, then every chunk's second, ...)
    # so that trimming to ``target`` drops the least important picks evenly.
    ranked = np.full((groups, k), -1, dtype=np.int64)
    for g, p in enumerate(picks):
        ranked[g, :len(p)] = p
    order = ranked.T.reshape(-1)
    order = order[order >= 0][:target]
    return np.sort(order)
