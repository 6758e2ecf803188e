"""Greedy k-center coreset (PatchCore's minimax facility location), vectorised.

Each step picks the point farthest from the current centres and updates
every point's distance to its nearest centre using only the newest centre
(a GEMV: ||x||^2 - 2 x.c + ||c||^2), so no N x N matrix is built. Selection
runs on a random projection (default 128-d), as in PatchCore.

:func:`chunked_greedy_coreset` bounds the cost for large banks: the points
are randomly partitioned into chunks of ``chunk_size`` and the greedy runs on
all chunks at once (one batched matrix product per step), so the cost is
``ratio * N * chunk_size * d`` - linear in N instead of quadratic.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..progress import Progress

CACHE_BYTES = 4 * 2**20  # working set per greedy block; fits a typical L2/L3 slice


def random_projection(x: torch.Tensor, dim: int | None, seed: int) -> torch.Tensor:
    """Gaussian random projection to ``dim`` dimensions (identity if dim is None or >= D)."""
    if dim is None or dim >= x.shape[-1]:
        return x
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(x.shape[-1], dim, generator=gen) / math.sqrt(dim)
    return x @ proj


def _greedy_batched(
    x: torch.Tensor, valid: torch.Tensor, k: int, start: torch.Tensor, progress: Progress | None
) -> torch.Tensor:
    """Greedy k-center on G groups at once. x: (G, c, d); valid: (G, c) bool; start: (G,)."""
    g = x.shape[0]
    rows = torch.arange(g)
    sq = (x * x).sum(-1)
    selected = torch.empty(g, k, dtype=torch.long)
    selected[:, 0] = start
    centre = x[rows, start]
    min_d = sq - 2 * torch.bmm(x, centre.unsqueeze(-1)).squeeze(-1) + (centre * centre).sum(-1, keepdim=True)
    min_d.masked_fill_(~valid, -math.inf)
    step = max(1, k // 100)
    for t in range(1, k):
        nxt = min_d.argmax(dim=1)
        selected[:, t] = nxt
        centre = x[rows, nxt]
        d = sq - 2 * torch.bmm(x, centre.unsqueeze(-1)).squeeze(-1) + (centre * centre).sum(-1, keepdim=True)
        torch.minimum(min_d, d, out=min_d)
        if progress is not None and t % step == 0:
            progress.update(step * g)
    return selected


def greedy_coreset(
    features: np.ndarray, n_select: int, projection_dim: int | None = 128, seed: int = 0,
    start: int | None = None,
) -> np.ndarray:
    """Exact greedy k-center over all points; returns ``n_select`` indices in pick order."""
    n = len(features)
    n_select = int(min(max(n_select, 1), n))
    x = random_projection(torch.from_numpy(np.ascontiguousarray(features, np.float32)), projection_dim, seed)
    if start is None:
        start = int(np.random.default_rng(seed).integers(n))
    sel = _greedy_batched(x.unsqueeze(0), torch.ones(1, n, dtype=torch.bool), n_select,
                          torch.tensor([start]), None)
    return sel[0].numpy()


def coreset_size(n: int, ratio: float, max_items: int | None = None) -> int:
    size = max(1, int(round(n * ratio)))
    return min(size, max_items) if max_items else size


def chunked_greedy_coreset(
    features: np.ndarray,
    ratio: float = 0.1,
    max_items: int | None = None,
    chunk_size: int | None = 16384,
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
    x = random_projection(torch.from_numpy(np.ascontiguousarray(features, np.float32)), projection_dim, seed)
    if chunk_size is None or n <= chunk_size:
        groups, per = 1, n
    else:
        groups = math.ceil(n / chunk_size)
        per = math.ceil(n / groups)
    perm = rng.permutation(n)
    padded = np.full(groups * per, -1, dtype=np.int64)
    padded[:n] = perm
    order = torch.from_numpy(padded.reshape(groups, per))
    valid = order >= 0
    xg = x[order.clamp(min=0)]
    k = min(per, math.ceil(target / groups))
    counts = valid.sum(1)
    start = torch.from_numpy(rng.integers(0, 1 << 62, size=groups)) % counts
    # Run the greedy on blocks of chunks small enough to stay in the CPU cache:
    # every step re-reads the block, so cache residency sets the speed.
    per_block = max(1, CACHE_BYTES // (per * x.shape[1] * 4))
    sel = torch.cat([
        _greedy_batched(xg[b:b + per_block], valid[b:b + per_block], k, start[b:b + per_block], progress)
        for b in range(0, groups, per_block)
    ])
    # rank-major order: every chunk's first pick, then every chunk's second, ...
    picked = order.gather(1, sel).T.reshape(-1).numpy()
    picked = picked[picked >= 0]
    _, first = np.unique(picked, return_index=True)
    picked = picked[np.sort(first)][:target]
    return np.sort(picked)
