# Run from the repository root. 30 bottle training images linked into /tmp/inv_radius/data/bottle/train/good (the first 30 by name); output: run2.txt
"""Sampled covering radius: the 2026-12-04 sampler (before b2bd853) vs today's ProbeSample,
on 30 bottle training images, two banks (streamed two_round fit, and the exact greedy)."""
import sys, json, glob
import numpy as np
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers.coreset import covering_radius, projection_matrix
from anomaly_inspect.scorers.nn_index import ProbeSample
from anomaly_inspect.scorers.patchcore import PatchCore, image_patches
from anomaly_inspect.evaluation.coreset_bench import bench_scorer
from anomaly_inspect.progress import Progress

cfg = ModelConfig()
paths = sorted(glob.glob("/tmp/inv_radius/data/bottle/train/good/*.png"))
runner = Runner(build(cfg, progress=False)[1], progress=False)
local = PatchCore(**{**cfg.scorer, "seed": cfg.seed, "progress": False})
proj = None
kept, flats = [], []
SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 9600
sample = ProbeSample(SIZE, seed=cfg.seed)
def tee(batches):
    for f in batches:
        global proj
        flat = image_patches(f); flats.append(flat)
        if proj is None: proj = projection_matrix(flat.shape[1], local.projection_dim, cfg.seed).numpy()
        rows = flat @ proj
        kept.append(rows); sample.add(rows)
        yield f
local.fit_batches(tee(runner.iter_features(paths, "fit")), len(paths))
allp = np.concatenate(kept); n = len(allp)
# old (2026-12-04) sampler, as coreset_bench.py had it before b2bd853
old = allp[np.sort(np.random.default_rng(cfg.seed).choice(n, SIZE, replace=False))]
new = sample.rows
# second bank: exact greedy on the same patches
flat = np.concatenate(flats)
from anomaly_inspect.choices import CORESET_VARIANTS
banks = {"streamed_two_round": local.memory_bank @ proj}
for v in ("one_round", "cells"):
    ch, fr = CORESET_VARIANTS[v](local.chunk_size, local.first_round_ratio, local.coreset_ratio)
    ex = bench_scorer(cfg.scorer, local.coreset_ratio, cfg.seed, chunk_size=ch, first_round_ratio=fr)
    c = ex.run_coreset(ex.coreset(), [flat], Progress(len(flat), "x", enabled=False))
    banks[v] = flat[c.finish(Progress(c.target, "y", enabled=False))] @ proj
def key(a): return np.round(a[:2, :3].astype(np.float64), 4).tolist()
old_set = {r.tobytes() for r in old}; common = sum(r.tobytes() in old_set for r in new)
out = {"patches": n, "sample": SIZE, "rows_in_both_samples": common,
       "old_first_rows": key(old), "new_first_rows": key(new)}
for name, b in banks.items():
    out[name] = {"full": round(covering_radius(allp, b), 4), "old_sample": round(covering_radius(old, b), 4),
                 "new_sample": round(covering_radius(new, b), 4)}
# spread of the sampled max over sampler seeds, and the sign of (exact - streamed)
spread = []
for s in range(20):
    pick = allp[np.random.default_rng(1000 + s).choice(n, SIZE, replace=False)]
    spread.append([covering_radius(pick, banks[k]) for k in banks])
spread = np.array(spread); names = list(banks)
out["seed_spread_min_max"] = {k: [round(spread[:, i].min(), 4), round(spread[:, i].max(), 4)] for i, k in enumerate(names)}
for i in range(1, len(names)):
    out[f"{names[i]} > streamed in k of 20 sampler seeds"] = int((spread[:, i] > spread[:, 0]).sum())
print(json.dumps(out))
