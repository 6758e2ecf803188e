import time, numpy as np
from threadpoolctl import threadpool_limits
from anomaly_inspect.scorers import coreset as C
x = np.load("/tmp/prof/union.npy"); k = 8896
rng = np.random.default_rng(0)
start = int(rng.integers(len(x)))
import cProfile, pstats
with threadpool_limits(2):
    g = C._Greedy(x, start, k)
    # instrument
    T = dict(dc=0., take=0., gemv_full=0., gemv_sub=0., upd=0., argmax=0., n_rows=0, n_full=0)
    orig = g._update_pruned
    def upd(c):
        t = len(g._picks) - 1
        if t == len(g.centres):
            g.centres = np.concatenate([g.centres, np.empty_like(g.centres)])
            g.csq = np.concatenate([g.csq, np.empty_like(g.csq)])
        a = time.perf_counter()
        cc = c @ c
        dc = C._sq_distances(g.centres[:t], g.csq[:t], c, cc)
        b = time.perf_counter(); T["dc"] += b - a
        rows = np.flatnonzero(dc.take(g.assign) <= g.lim)
        a = time.perf_counter(); T["take"] += a - b
        T["n_rows"] += len(rows)
        if len(rows) * C.PRUNE_GATHER_COST > len(g.x):
            d = C._sq_distances(g.x, g.sq, c, cc); moved = np.flatnonzero(d < g.min_d); d = d[moved]
            T["n_full"] += 1
            b = time.perf_counter(); T["gemv_full"] += b - a
        else:
            d = C._sq_distances(g.x[rows], g.sq.take(rows), c, cc)
            better = d < g.min_d.take(rows); moved, d = rows[better], d[better]
            b = time.perf_counter(); T["gemv_sub"] += b - a
        g.min_d[moved] = d; g.lim[moved] = g._bound(d); g.assign[moved] = t
        g.centres[t] = c; g.csq[t] = cc
        a = time.perf_counter(); T["upd"] += a - b
    g._update_pruned = upd
    t0 = time.perf_counter()
    g.extend(k)
    tot = time.perf_counter() - t0
print(f"total {tot:.2f}", {kk: round(v, 2) if isinstance(v, float) else v for kk, v in T.items()})
sel = np.load("/tmp/prof/sel.npy")
print("same picks:", np.array_equal(np.sort(g.picks), np.sort(sel)) if len(sel)==k else "n/a")
