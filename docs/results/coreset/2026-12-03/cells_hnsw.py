"""HNSW quality on the cells bank vs the default bank (bottle): what fixes the 17.6 % error?"""
import time
import faiss
import numpy as np
import torch
from anomaly_inspect.config import load_config
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers import patchcore as pc
from anomaly_inspect.scorers.coreset import two_round_coreset

torch.set_num_threads(2)
cfg = load_config(None)
ds = load_mvtec("/work/shared/data/mvtec_ad", "bottle")
runner = Runner(build(cfg, progress=False)[1], progress=False)
tr = pc.image_patches(runner.extract([s.path for s in ds.train], "train").features)
te = runner.extract([s.path for s in ds.test], "test").features.patches
tr = np.ascontiguousarray(tr.numpy() if hasattr(tr, "numpy") else tr, np.float32)
te = np.asarray(te.numpy() if hasattr(te, "numpy") else te, np.float32)
flat = np.ascontiguousarray(te.reshape(-1, te.shape[-1]))
s = np.random.default_rng(0).choice(len(flat), 20000, replace=False)
q = flat[s]
banks = {}
for name, first in (("default", "auto"), ("cells", 0.2)):
    banks[name] = tr[two_round_coreset(tr, ratio=0.1, first_round_ratio=first, seed=0)]
np.save("/work/runs/prune/bottle_banks.npy", np.stack([banks["default"], banks["cells"]]))
np.save("/work/runs/prune/bottle_q.npy", q)
for name, bank in banks.items():
    ex = faiss.IndexFlatL2(bank.shape[1]); ex.add(bank)
    de, ie = ex.search(q, 1); de = np.sqrt(np.maximum(de[:, 0], 1e-12))
    # duplicates / near-duplicates in the bank?
    dd, _ = ex.search(bank[:3000], 2)
    print(f"{name}: bank nn-dist median {np.median(np.sqrt(dd[:,1])):.3f}, zero-dist pairs {(dd[:,1] < 1e-6).sum()} of 3000", flush=True)
    for label, m, efc, efs, shuffle in (("M16 efC40 efS32", 16, 40, 32, False), ("efS64", 16, 40, 64, False),
                                         ("efS128", 16, 40, 128, False), ("efC80", 16, 80, 32, False),
                                         ("shuffled", 16, 40, 32, True), ("M32", 32, 40, 32, False)):
        b = bank[np.random.default_rng(1).permutation(len(bank))] if shuffle else bank
        idx = faiss.IndexHNSWFlat(b.shape[1], m); idx.hnsw.efConstruction = efc; idx.hnsw.efSearch = efs
        t = time.perf_counter(); idx.add(b); tb = time.perf_counter() - t
        t = time.perf_counter(); d, _ = idx.search(q, 1); ts = time.perf_counter() - t
        r = np.sqrt(np.maximum(d[:, 0], 0)) / de - 1
        print(f"  {label}: build {tb:.2f}s search {ts:.2f}s mean err {r.mean():.4%}, >1% {np.mean(r > 0.01):.3f}, p99 {np.quantile(r, .99):.3f}", flush=True)
