"""Bank-only HNSW quality proxy: a seeded sample of bank items queried for k=2; the second
neighbour's distance against the exact one. Does it tell the cells bank's M16 graph (bad) from
the default bank's (good)?"""
import faiss
import numpy as np

banks = np.load("/work/runs/prune/bottle_banks.npy")
q_test = np.load("/work/runs/prune/bottle_q.npy")
for name, bank in zip(("default", "cells"), banks):
    ex = faiss.IndexFlatL2(bank.shape[1]); ex.add(bank)
    s = np.random.default_rng(0).choice(len(bank), 1024, replace=False)
    de, _ = ex.search(bank[s], 2)
    dt, _ = ex.search(q_test, 1)
    for m in (16, 32):
        idx = faiss.IndexHNSWFlat(bank.shape[1], m); idx.hnsw.efConstruction = 40; idx.hnsw.efSearch = 32
        idx.add(bank)
        d, _ = idx.search(bank[s], 2)
        a, b = np.sqrt(np.maximum(d[:, 1], 0)), np.sqrt(np.maximum(de[:, 1], 0))
        dq, _ = idx.search(q_test, 1)
        qa, qb = np.sqrt(np.maximum(dq[:, 0], 0)), np.sqrt(np.maximum(dt[:, 0], 0))
        print(f"{name} M{m}: bank proxy excess {(a - b).mean() / b.mean():.4%} (self found {np.mean(d[:,0] < 1e-6):.3f}, 2nd wrong {np.mean(a > b * 1.0001):.3f}); "
              f"test-patch excess {(qa - qb).mean() / qb.mean():.4%}")
