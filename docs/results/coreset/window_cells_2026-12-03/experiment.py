"""Experiment (not in the package): round 1 as k-means cells per window instead of random chunks.

Screw with the 152-d embedding (configs/longtail_first_embedding.yaml), 10 % coreset, seeds 0-4:
the default two-round coreset (at 10 % a plain chunked greedy), the exact greedy, and
"window cells": each window of 16 x 4096 rows (the rows as they arrive, shuffled within the
window as round 1 does) is split into 16 k-means cells and coreset.cells_greedy picks 10 % of
the window from them, merged by radius; the windows' picks are the bank (no round 2). Same
features for every variant and seed; banks scored with exact search (as bench-coreset does).
Pre-registered question: is window cells within 0.005 of the exact greedy on the mean of the
five seeds, at what coreset time? Nothing here is tuned on the test labels."""
import json
import math
import sys
import time

import numpy as np

from anomaly_inspect.config import load_config
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers.coreset import (WINDOW_CHUNKS, TwoRoundCoreset, cells_greedy,
                                             covering_radius, projection_matrix)
from anomaly_inspect.scorers.patchcore import PatchCore, image_patches

out = sys.argv[1]
cfg = load_config("longtail_first_embedding")
data = load_mvtec("/work/shared/data/mvtec_ad", "screw")
runner = Runner(build(cfg, progress=False)[1], progress=False)
train = runner.extract([s.path for s in data.train], "train").features
test = runner.extract([s.path for s in data.test], "test").features
labels = np.array([s.label for s in data.test])
flat = image_patches(train)
ratio, chunk = 0.1, 4096


def score(idx):
    pc = PatchCore(index="flat", progress=False)
    pc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
    return float(auroc(labels, pc.score(test).image_scores))


def window_cells(seed):
    proj = projection_matrix(flat.shape[1], 128, seed).numpy()
    rng = np.random.default_rng(seed)
    window = chunk * WINDOW_CHUNKS
    picks = []
    for s in range(0, len(flat), window):
        rows = np.arange(s, min(s + window, len(flat)))
        rows = rows[rng.permutation(len(rows))]
        x = np.ascontiguousarray(flat[rows] @ proj)
        k = math.ceil(ratio * len(rows))
        cells = max(1, math.ceil(len(rows) / chunk))
        picks.append(rows[cells_greedy(x, k, cells, rng, threads=2)])
    return np.sort(np.concatenate(picks))


results = []
for seed in range(5):
    proj = projection_matrix(flat.shape[1], 128, seed).numpy()
    projected = flat @ proj
    for variant in ("two_round", "window_cells", "exact"):
        t = time.perf_counter()
        if variant == "window_cells":
            idx = window_cells(seed)
        else:
            c = TwoRoundCoreset(ratio, None, chunk if variant == "two_round" else None, "auto", 128, seed)
            c.add(flat)
            idx = c.finish()
        sec = time.perf_counter() - t
        row = {"seed": seed, "variant": variant, "bank": len(idx), "seconds": round(sec, 2),
               "radius": round(covering_radius(projected, projected[idx]), 4),
               "image_auroc": round(score(idx), 4)}
        results.append(row)
        print(json.dumps(row), flush=True)
json.dump(results, open(out, "w"), indent=1)
for v in ("two_round", "window_cells", "exact"):
    a = [r["image_auroc"] for r in results if r["variant"] == v]
    s = [r["seconds"] for r in results if r["variant"] == v]
    print(v, "mean AUROC %.4f" % np.mean(a), "mean s %.2f" % np.mean(s))
