import numpy as np, faiss
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.scorers.nn_index import NearestNeighbours, ProbeSample, graph_excess, nearest_distances
for cat in ("bottle", "pill"):
    z = np.load(f"/tmp/s31/feat_{cat}.npz") if cat == "bottle" else None
    if z is None:
        import os
        if not os.path.exists(f"/tmp/s31/feat_{cat}.npz"): continue
        z = np.load(f"/tmp/s31/feat_{cat}.npz")
    tr = z["tr"]
    sc = PatchCore(progress=False); cs = sc.coreset(keep_rows=True)
    for i in range(0, len(tr), 32): cs.add(tr[i:i+32].reshape(-1, tr.shape[-1]))
    _, rows = cs.finish_positions_rows(None)
    bank = np.ascontiguousarray(rows, np.float32)
    nn = NearestNeighbours("hnsw", seed=0).fit(bank)
    idx = faiss.downcast_index(nn.index); flat = faiss.downcast_index(idx.storage)
    for seed in range(8):
        probes = ProbeSample(seed=seed).add(tr.reshape(-1, tr.shape[-1])).rows
        exact = nearest_distances(flat, probes)
        out = []
        for ef in (32, 16):
            idx.hnsw.efSearch = ef
            out.append(graph_excess(idx, probes, exact) * 100)
        print(cat, "probe seed", seed, "excess ef32 %.2f %% ef16 %.2f %%" % tuple(out))
