"""Session experiment: spatial cells (k-means) + greedy per cell + merge picks by radius."""

import json
import math
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, "/work/bench/inspect")
from threadpoolctl import threadpool_limits

from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.scorers.coreset import covering_radius, projection_matrix
from anomaly_inspect.scorers.patchcore import PatchCore


def greedy_curve(x, k, start):
    sq = np.einsum("ij,ij->i", x, x)
    sel = np.empty(k, np.int64)
    val = np.empty(k, np.float32)
    sel[0] = start
    val[0] = np.inf
    c = x[start]
    min_d = sq - 2.0 * (x @ c) + c @ c
    for t in range(1, k):
        i = int(min_d.argmax())
        sel[t] = i
        val[t] = min_d[i]
        c = x[i]
        d = x @ c
        d *= -2.0
        d += sq
        d += c @ c
        np.minimum(min_d, d, out=min_d)
    return sel, val


tag = sys.argv[1]
ratio = float(sys.argv[2])
seed = int(os.environ.get("SEED", 0))
d = f"/tmp/s20/feat_{tag}"
flat = np.load(d + "_train.npy")
test = np.load(d + "_test.npy")
labels = np.load(d + "_labels.npy")
proj = projection_matrix(flat.shape[1], 128, seed).numpy()
X = np.ascontiguousarray(flat @ proj)
N = len(X)
k = int(round(N * ratio))
for spec in sys.argv[3:]:
    cell, rho = spec.split(":")
    cell = int(cell)
    rho = float(rho)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    ncell = max(1, N // cell)
    km = faiss.Kmeans(X.shape[1], ncell, niter=10, seed=seed, max_points_per_centroid=64)
    km.train(X[rng.choice(N, min(N, 64 * ncell), replace=False)])
    _, assign = km.index.search(X, 1)
    assign = assign[:, 0]
    t1 = time.perf_counter()
    picks, vals = [], []
    with threadpool_limits(1):
        for j in range(ncell):
            members = np.flatnonzero(assign == j)
            if len(members) == 0:
                continue
            kj = min(len(members), math.ceil(rho * ratio * len(members)))
            sel, val = greedy_curve(X[members], kj, int(rng.integers(len(members))))
            picks.append(members[sel])
            vals.append(val)
    picks = np.concatenate(picks)
    vals = np.concatenate(vals)
    order = np.argsort(-vals, kind="stable")[:k]
    idx = np.sort(picks[order])
    dt = time.perf_counter() - t0
    sc = PatchCore(index="flat", progress=False)
    sc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
    a = auroc(labels, sc.score(Features(test)).image_scores)
    r = covering_radius(X, X[idx])
    sizes = np.bincount(assign, minlength=ncell)
    print(
        json.dumps(
            {
                "tag": tag,
                "seed": seed,
                "ratio": ratio,
                "spec": spec,
                "bank": len(idx),
                "s": round(dt, 2),
                "kmeans_s": round(t1 - t0, 2),
                "cell_sizes": [int(sizes.min()), int(np.median(sizes)), int(sizes.max())],
                "radius": round(r, 3),
                "auroc": round(float(a), 4),
            }
        ),
        flush=True,
    )
