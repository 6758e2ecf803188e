"""Where do the HNSW M16 failures on the cells bank come from: training patches (not in the
bank), test patches of good images, test patches of defective images?"""
import faiss
import numpy as np
import torch
from anomaly_inspect.config import load_config
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers import patchcore as pc

torch.set_num_threads(2)
cfg = load_config(None)
ds = load_mvtec("/work/shared/data/mvtec_ad", "bottle")
runner = Runner(build(cfg, progress=False)[1], progress=False)
tr = pc.image_patches(runner.extract([s.path for s in ds.train], "train").features)
tr = np.asarray(tr.numpy() if hasattr(tr, "numpy") else tr, np.float32)
rng = np.random.default_rng(0)
qtr = np.ascontiguousarray(tr[rng.choice(len(tr), 20000, replace=False)])
np.save("/work/runs/prune/bottle_qtrain.npy", qtr)
good = [s for s in ds.test if s.label == 0]
bad = [s for s in ds.test if s.label == 1]
def pts(samples):
    p = runner.extract([s.path for s in samples], "t").features.patches
    p = np.asarray(p.numpy() if hasattr(p, "numpy") else p, np.float32).reshape(-1, tr.shape[1])
    return np.ascontiguousarray(p[rng.choice(len(p), min(20000, len(p)), replace=False)])
sets = {"train": qtr, "test good": pts(good), "test defective": pts(bad)}
banks = np.load("/work/runs/prune/bottle_banks.npy")
for name, bank in zip(("default", "cells"), banks):
    ex = faiss.IndexFlatL2(bank.shape[1]); ex.add(bank)
    for m in (16, 32):
        idx = faiss.IndexHNSWFlat(bank.shape[1], m); idx.hnsw.efConstruction = 40; idx.hnsw.efSearch = 32
        idx.add(bank)
        out = []
        for sname, q in sets.items():
            de, _ = ex.search(q, 1); d, _ = idx.search(q, 1)
            a, b = np.sqrt(np.maximum(d[:, 0], 0)), np.sqrt(np.maximum(de[:, 0], 0))
            out.append(f"{sname} {(a - b).mean() / b.mean():.3%} (>5% off: {np.mean(a > 1.05 * b):.4f})")
        print(f"{name} M{m}: " + "; ".join(out), flush=True)
