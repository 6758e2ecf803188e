"""HNSW search on magnetic tile's default bank: flat f32 storage vs SQ8 / fp16 storage."""
import time, numpy as np, faiss
from anomaly_inspect.scorers.patchcore import PatchCore
z = np.load("/tmp/s31/feat_magnetic_tile.npz"); tr, te = z["tr"], z["te"]
sc = PatchCore(progress=False)
cs = sc.coreset(keep_rows=True)
for i in range(0, len(tr), 32): cs.add(tr[i:i+32].reshape(-1, tr.shape[-1]))
_, rows = cs.finish_positions_rows(None)
bank = np.ascontiguousarray(rows, np.float32); d = bank.shape[1]
q = te[:160].reshape(-1, d)
exact = faiss.IndexFlatL2(d); exact.add(bank)
ed = np.sqrt(np.maximum(exact.search(q, 1)[0][:, 0], 0))
def make(kind):
    if kind == "flat": idx = faiss.IndexHNSWFlat(d, 16)
    else: idx = faiss.IndexHNSWSQ(d, {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16, "bf16": getattr(faiss.ScalarQuantizer, "QT_bf16", faiss.ScalarQuantizer.QT_fp16)}[kind], 16)
    idx.hnsw.efConstruction = 40
    t = time.perf_counter()
    if kind != "flat": idx.train(bank)
    idx.add(bank); bt = time.perf_counter() - t
    idx.hnsw.efSearch = 32
    return idx, bt
for kind in ["flat", "sq8", "fp16", "bf16", "flat"]:
    idx, bt = make(kind)
    t = time.perf_counter(); D, I = idx.search(q, 1); st = time.perf_counter() - t
    true_d = np.linalg.norm(q - bank[I[:, 0]], axis=1)  # distance to the returned item, in f32
    print(f"{kind}: build {bt:.2f} s, search {len(q)} q {st:.2f} s, excess of the returned item {((true_d - ed).mean() / ed.mean())*100:.3f} %, reported-vs-true {np.abs(np.sqrt(np.maximum(D[:,0],0)) - true_d).max():.4f}")
