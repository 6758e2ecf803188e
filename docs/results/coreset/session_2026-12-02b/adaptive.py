"""Session experiment: global k-means cells, per-cell greedy extended adaptively until the
k-th largest pick value (radius before the pick) is settled; merge picks by value."""

import json
import math
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, "/work/bench/inspect")
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import threadpool_limits

from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.scorers.coreset import covering_radius, projection_matrix
from anomaly_inspect.scorers.patchcore import PatchCore


class Cell:
    def __init__(self, x, start):
        self.x = x
        self.sq = np.einsum("ij,ij->i", x, x)
        c = x[start]
        self.min_d = self.sq - 2.0 * (x @ c) + c @ c
        self.picks = [start]
        self.vals = [np.inf]

    def extend(self, upto):
        x, sq, min_d = self.x, self.sq, self.min_d
        upto = min(upto, len(x))
        while len(self.picks) < upto:
            i = int(min_d.argmax())
            self.picks.append(i)
            self.vals.append(float(min_d[i]))
            c = x[i]
            d = x @ c
            d *= -2.0
            d += sq
            d += c @ c
            np.minimum(min_d, d, out=min_d)
        return self

    @property
    def done(self):
        return len(self.picks) >= len(self.x)


def run(X, ratio, cell, seed, grow=1.5, threads=2, init=1.0):
    N = len(X)
    k = int(round(N * ratio))
    rng = np.random.default_rng(seed)
    ncell = max(1, N // cell)
    km = faiss.Kmeans(X.shape[1], ncell, niter=10, seed=seed, max_points_per_centroid=64)
    km.train(X[rng.choice(N, min(N, 64 * ncell), replace=False)])
    _, assign = km.index.search(X, 1)
    assign = assign[:, 0]
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(ncell + 1))
    members = [order[bounds[j] : bounds[j + 1]] for j in range(ncell) if bounds[j + 1] > bounds[j]]
    starts = [int(rng.integers(len(m))) for m in members]
    computed = 0
    with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
        cells = list(
            pool.map(
                lambda a: Cell(np.ascontiguousarray(X[a[0]]), a[1]).extend(
                    max(1, math.ceil(init * ratio * len(a[0])))
                ),
                zip(members, starts, strict=False),
            )
        )
        rounds = 1
        while True:
            vals = np.concatenate([c.vals for c in cells])
            T = np.partition(vals, len(vals) - k)[len(vals) - k] if len(vals) >= k else -np.inf
            todo = [c for c in cells if not c.done and c.vals[-1] >= T]
            if not todo:
                break
            list(pool.map(lambda c: c.extend(math.ceil(len(c.picks) * grow) + 1), todo))
            rounds += 1
    vals = np.concatenate([c.vals for c in cells])
    picks = np.concatenate([m[np.array(c.picks)] for m, c in zip(members, cells, strict=False)])
    computed = len(vals)
    top = np.argsort(-vals, kind="stable")[:k]
    return np.sort(picks[top]), computed, rounds


if __name__ == "__main__":
    tag = sys.argv[1]
    ratio = float(sys.argv[2])
    seed = int(os.environ.get("SEED", 0))
    d = f"/tmp/s20/feat_{tag}"
    flat = np.load(d + "_train.npy")
    test = np.load(d + "_test.npy")
    labels = np.load(d + "_labels.npy")
    X = np.ascontiguousarray(flat @ projection_matrix(flat.shape[1], 128, seed).numpy())
    for spec in sys.argv[3:]:
        cell, grow, init = spec.split(":")
        t = time.perf_counter()
        idx, computed, rounds = run(X, ratio, int(cell), seed, float(grow), init=float(init))
        dt = time.perf_counter() - t
        sc = PatchCore(index="flat", progress=False)
        sc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
        a = auroc(labels, sc.score(Features(test)).image_scores)
        print(
            json.dumps(
                {
                    "tag": tag,
                    "seed": seed,
                    "ratio": ratio,
                    "spec": spec,
                    "bank": len(idx),
                    "computed": computed,
                    "rounds": rounds,
                    "s": round(dt, 2),
                    "radius": round(covering_radius(X, X[idx]), 3),
                    "auroc": round(float(a), 4),
                }
            ),
            flush=True,
        )


def chunked(flat, ratio, seed):
    from anomaly_inspect.scorers.coreset import TwoRoundCoreset

    t = time.perf_counter()
    c = TwoRoundCoreset(ratio, seed=seed)
    c.add(flat)
    idx = c.finish()
    return idx, time.perf_counter() - t
