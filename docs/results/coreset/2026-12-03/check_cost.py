"""What the graph check costs on a default bank (bottle, 33,440 x 232): build, and the check
(1,024 probes searched on the graph and exactly), best of 5."""
import time
import numpy as np
from anomaly_inspect.scorers.nn_index import NearestNeighbours

bank = np.load("/work/runs/prune/bottle_banks.npy")[0]
probes = np.load("/work/runs/prune/bottle_qtrain.npy")[:1024]
best = {}
for _ in range(5):
    for name, p in (("build only", None), ("build + check", probes)):
        t = time.perf_counter(); nn = NearestNeighbours("hnsw").fit(bank, p); dt = time.perf_counter() - t
        best[name] = min(best.get(name, 1e9), dt)
print({k: round(v, 3) for k, v in best.items()}, "checks", nn.graph_checks)
