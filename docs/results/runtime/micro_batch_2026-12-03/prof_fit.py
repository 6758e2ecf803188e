"""Stage timing of PatchCore fit / score on cached bottle features."""
import os, sys, time, numpy as np, torch
from pathlib import Path
torch.set_num_threads(2)
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.pipeline.builders import build
from anomaly_inspect.pipeline.runner import Runner
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.core import Features
cat = os.environ.get("CAT", "bottle")
cache = Path(f"/tmp/s31/feat_{cat}.npz")
cfg = ModelConfig()
backbone, extractor, scorer = build(cfg, progress=False)
if not cache.exists():
    ds = load_mvtec("/work/shared/data/magnetic_tile" if cat == "magnetic_tile" else "/work/shared/data/mvtec_ad", cat)
    r = Runner(extractor, progress=False)
    tr = r.extract([s.path for s in ds.train], "t").features.patches
    te = r.extract([s.path for s in ds.test], "t").features.patches
    np.savez(cache, tr=tr, te=te)
z = np.load(cache); tr, te = z["tr"], z["te"]
print(cat, tr.shape, te.shape)
from anomaly_inspect.scorers.patchcore import PatchCore, exact_image_maxima, image_patches
from anomaly_inspect.scorers import nn_index
def T(label, f, *a, **k):
    t = time.perf_counter(); out = f(*a, **k); print(f"{label}: {time.perf_counter() - t:.3f} s"); return out
sc = PatchCore(progress=False)
# coreset alone
batches = [Features(tr[i:i + 32]) for i in range(0, len(tr), 32)]
cs = sc.coreset(keep_rows=True)
T("coreset round 1", lambda: [cs.add(image_patches(b)) for b in batches])
pos, rows = T("coreset finish", cs.finish_positions_rows, None, ) if False else T("coreset finish", lambda: cs.finish_positions_rows(None))
bank = np.ascontiguousarray(rows).astype(np.float32)
probes = sc.probes(Features(tr))
nn = T("nn fit (build+check)", lambda: nn_index.NearestNeighbours(sc.index, seed=sc.seed).fit(bank, probes))
nn2 = T("nn fit (build only)", lambda: nn_index.NearestNeighbours(sc.index, seed=sc.seed).fit(bank))
flat = te.reshape(len(te), -1, te.shape[-1])
d, i = T("hnsw search", nn.search, flat.reshape(-1, flat.shape[-1]), 1)
ps = d[:, 0].reshape(len(te), -1).copy(); ii = i[:, 0].reshape(len(te), -1).copy()
T("exact maxima", exact_image_maxima, flat, ps, ii, nn)
import anomaly_inspect.scorers.patchcore as pcm
calls = []
orig = nn.search_exact
def counting(q, k):
    t = time.perf_counter(); r = orig(q, k); calls.append((len(q), time.perf_counter() - t)); return r
nn.search_exact = counting
ps = d[:, 0].reshape(len(te), -1).copy(); ii = i[:, 0].reshape(len(te), -1).copy()
T("exact maxima (counted)", exact_image_maxima, flat, ps, ii, nn)
print("exact rounds", len(calls), "queries", sum(c for c, _ in calls), "seconds", round(sum(s for _, s in calls), 3))
