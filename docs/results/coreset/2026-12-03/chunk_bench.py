"""Round-1 chunk greedy, full GEMV vs pruned update, side by side (interleaved, best of R)."""
import sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from anomaly_inspect.scorers import coreset as cs

p = np.load("/work/runs/prune/bottle_p128.npy")
rng = np.random.default_rng(0)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
chunks = [np.ascontiguousarray(p[rng.choice(len(p), n, replace=False)]) for _ in range(6)]
R = 3
res = {}
with threadpool_limits(1):
    for keep in (0.05, 0.1, 0.15, 0.2, 0.3):
        k = int(np.ceil(keep * n))
        for _ in range(R):
            for mode in ("full", "pruned"):
                cs.PRUNE_MIN_BYTES = 0 if mode == "pruned" else 1 << 60
                t = time.perf_counter()
                picks = [cs._Greedy(c, 0).extend(k).picks for c in chunks]
                dt = (time.perf_counter() - t) / len(chunks) * 1e3
                key = (keep, mode)
                res[key] = min(res.get(key, 1e9), dt)
                res[(keep, mode, "picks")] = picks
        same = all((a == b).all() for a, b in zip(res[(keep, "full", "picks")], res[(keep, "pruned", "picks")]))
        print(f"n={n} keep {keep:.2f} k={k}: full {res[(keep,'full')]:.1f} ms, pruned {res[(keep,'pruned')]:.1f} ms, "
              f"ratio {res[(keep,'pruned')]/res[(keep,'full')]:.2f}, same picks {same}", flush=True)
