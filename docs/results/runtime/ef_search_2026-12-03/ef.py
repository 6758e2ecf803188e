import time, numpy as np, faiss, sys
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.scorers.nn_index import NearestNeighbours
cat = sys.argv[1]
z = np.load(f"/tmp/s31/feat_{cat}.npz"); tr, te = z["tr"], z["te"]
sc = PatchCore(progress=False)
cs = sc.coreset(keep_rows=True)
for i in range(0, len(tr), 32): cs.add(tr[i:i+32].reshape(-1, tr.shape[-1]))
_, rows = cs.finish_positions_rows(None)
bank = np.ascontiguousarray(rows, np.float32); d = bank.shape[1]
nn = NearestNeighbours("hnsw", seed=0).fit(bank)
q = te[:128].reshape(-1, d)
ed = nn.search_exact(q, 1)[0][:, 0]
idx = faiss.downcast_index(nn.index)
for ef in (32, 16, 24, 32, 16):
    idx.hnsw.efSearch = ef
    t = time.perf_counter(); D, I = nn.search(q, 1); st = time.perf_counter() - t
    ex = D[:, 0] - ed
    print(f"{cat} efSearch {ef}: {len(q)} queries {st:.2f} s, mean excess {ex.mean()/ed.mean()*100:.3f} %, share > 5 % off {(ex > 0.05*ed).mean()*100:.2f} %")
