"""Per category (default config, seed 0): HNSW (M 16 / efC 40 / efS 32) excess distance on 1024
seeded training patches, default bank and cells bank, M16 and M32. Label-free (training only)."""
import sys
import faiss
import numpy as np
import torch
from anomaly_inspect.config import load_config
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers import patchcore as pc
from anomaly_inspect.scorers.coreset import two_round_coreset

torch.set_num_threads(2)
cfg = load_config(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None)
runner = Runner(build(cfg, progress=False)[1], progress=False)
for root, cat in (("mvtec_ad", "bottle"), ("mvtec_ad", "screw"), ("mvtec_ad", "metal_nut"),
                  ("mvtec_ad", "pill"), ("magnetic_tile", "magnetic_tile")):
    ds = load_mvtec(f"/work/shared/data/{root}", cat)
    tr = pc.image_patches(runner.extract([s.path for s in ds.train], "train").features)
    tr = np.asarray(tr.numpy() if hasattr(tr, "numpy") else tr, np.float32)
    probes = np.ascontiguousarray(tr[np.random.default_rng(0).choice(len(tr), 1024, replace=False)])
    out = []
    for name, first in (("default", "auto"), ("cells", 0.2)):
        bank = np.ascontiguousarray(tr[two_round_coreset(tr, ratio=0.1, first_round_ratio=first, seed=0)])
        ex = faiss.IndexFlatL2(bank.shape[1]); ex.add(bank)
        b = np.sqrt(np.maximum(ex.search(probes, 1)[0][:, 0], 0))
        for m in (16, 32):
            idx = faiss.IndexHNSWFlat(bank.shape[1], m); idx.hnsw.efConstruction = 40; idx.hnsw.efSearch = 32
            idx.add(bank)
            a = np.sqrt(np.maximum(idx.search(probes, 1)[0][:, 0], 0))
            out.append(f"{name} M{m} {(a - b).mean() / b.mean():.3%}")
    print(f"{cat} ({len(tr)} patches): " + ", ".join(out), flush=True)
    del tr
