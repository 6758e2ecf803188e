"""How much the check's excess moves on bottle's default bank: 4 builds x 3 probe samples."""
import numpy as np
from anomaly_inspect.scorers.nn_index import NearestNeighbours

bank = np.load("/work/runs/prune/bottle_banks.npy")[0]
pool = np.load("/work/runs/prune/bottle_qtrain.npy")
for build in range(4):
    row = []
    for s in range(3):
        probes = pool[np.random.default_rng(s).choice(len(pool), 1024, replace=False)]
        nn = NearestNeighbours("hnsw").fit(bank, probes)
        row.append(nn.graph_checks[0])
    print("build", build, [f"{100 * v:.2f} %" for v in row])
