"""Why is search slower over the cells bank? bottle, default config: banks from the default
two-round (10 %) and the cells variant (round 1 keeps 0.2), HNSW (M 16 / efC 40 / efS 32) on
each, the test patches searched; search and exact-maxima time, and how many patches the
exact maxima re-check."""
import time
import numpy as np
import torch
from anomaly_inspect.config import load_config
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers import patchcore as pc
from anomaly_inspect.scorers.coreset import two_round_coreset
from anomaly_inspect.scorers.nn_index import NearestNeighbours

torch.set_num_threads(2)
cfg = load_config(None)
ds = load_mvtec("/work/shared/data/mvtec_ad", "bottle")
runner = Runner(build(cfg, progress=False)[1], progress=False)
tr = pc.image_patches(runner.extract([s.path for s in ds.train], "train").features)
te = runner.extract([s.path for s in ds.test], "test").features.patches
tr = np.ascontiguousarray(tr.numpy() if hasattr(tr, "numpy") else tr, np.float32)
te = np.asarray(te.numpy() if hasattr(te, "numpy") else te, np.float32)
n_img = te.shape[0]
te = te.reshape(n_img, -1, te.shape[-1])
flat = np.ascontiguousarray(te.reshape(-1, te.shape[-1]))
print("train", tr.shape, "test", te.shape, flush=True)

calls = {"n": 0, "q": 0}
orig = NearestNeighbours.search_exact
def counting(self, q, k=1):
    calls["n"] += 1; calls["q"] += len(q)
    return orig(self, q, k)
NearestNeighbours.search_exact = counting

for name, first in (("default", "auto"), ("cells", 0.2)):
    t = time.perf_counter()
    sel = two_round_coreset(tr, ratio=0.1, first_round_ratio=first, seed=0)
    tc = time.perf_counter() - t
    bank = tr[sel]
    for rep in range(2):
        t = time.perf_counter(); nn = NearestNeighbours("hnsw").fit(bank); tb = time.perf_counter() - t
        t = time.perf_counter(); d, i = nn.search(flat, 1); ts = time.perf_counter() - t
        dist = d[:, 0].reshape(n_img, -1).copy(); idx = i[:, 0].reshape(n_img, -1).copy()
        approx_max = dist.max(1)
        calls["n"] = calls["q"] = 0
        t = time.perf_counter(); pc.exact_image_maxima(te, dist, idx, nn); tx = time.perf_counter() - t
        # how far HNSW is from exact: a sample of patches
        s = np.random.default_rng(0).choice(len(flat), 5000, replace=False)
        de, _ = nn.search_exact(flat[s], 1)
        rel = float(np.mean(d[s, 0] / np.maximum(de[:, 0], 1e-9) - 1))
        print(f"{name}: bank {len(bank)} coreset {tc:.2f}s build {tb:.2f}s search {ts:.2f}s exact-maxima {tx:.2f}s "
              f"({calls['q']} re-checked in {calls['n']} rounds), hnsw/exact-1 {rel:.4%}, max moved {float(np.abs(dist.max(1)-approx_max).mean()):.4f}",
              flush=True)
