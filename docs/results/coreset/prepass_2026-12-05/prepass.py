"""Experiment (issue 20): round 1's chunks seeded by P centres picked up front by a greedy on a
sample of the first window, so that dense regions are covered once instead of in every chunk."""
import json, math, os, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np, faiss
from threadpoolctl import threadpool_limits
from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.scorers.coreset import TwoRoundCoreset, covering_radius, projection_matrix, _Greedy
from anomaly_inspect.scorers.patchcore import PatchCore

cat, cfgname = sys.argv[1], sys.argv[2]
d = f"/tmp/s43/feat_{cat}_{cfgname}"
flat = np.load(d + "_train.npy"); test = np.load(d + "_test.npy"); labels = np.load(d + "_labels.npy")
ratio = float(sys.argv[3]); seeds = [int(s) for s in sys.argv[4].split(",")]
configs = [tuple(int(v) for v in c.split(":")) for c in sys.argv[5].split(",")]  # P:S
faiss.omp_set_num_threads(2)


def evaluate(idx):
    sc = PatchCore(index="flat", progress=False)
    sc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
    return float(auroc(labels, sc.score(Features(test)).image_scores))


def chunk_greedy(x, init, k):
    sq = np.einsum("ij,ij->i", x, x)
    min_d = init.copy()
    sel = []
    for _ in range(k):
        j = int(np.argmax(min_d)); sel.append(j)
        dj = x @ x[j]; dj *= -2; dj += sq; dj += sq[j]
        np.minimum(min_d, dj, out=min_d); min_d[j] = -np.inf
    return np.array(sel, dtype=np.int64)


def prepass(projected, k, P, S, chunk, rng):
    n = len(projected)
    window = min(n, 65536)
    sample = np.sort(rng.choice(window, size=min(S, window), replace=False))
    xs = np.ascontiguousarray(projected[sample])
    with threadpool_limits(2):
        g = _Greedy(xs, int(rng.integers(len(xs))), P).extend(P)
    seed_rows = sample[g.picks]
    s = np.ascontiguousarray(projected[seed_rows]); ss = np.einsum("ij,ij->i", s, s)
    perm = rng.permutation(n)
    parts = np.array_split(perm, math.ceil(n / chunk))
    quota = [math.ceil((k - P) * len(p) / n) for p in parts]

    def one(i):
        p = parts[i]
        x = np.ascontiguousarray(projected[p])
        sq = np.einsum("ij,ij->i", x, x)
        dd = x @ s.T; dd *= -2; dd += sq[:, None]; dd += ss[None, :]
        init = dd.min(1)
        return p[chunk_greedy(x, init, quota[i])]

    with threadpool_limits(1), ThreadPoolExecutor(2) as ex:
        picks = list(ex.map(one, range(len(parts))))
    return np.unique(np.concatenate([seed_rows, *picks]))


for seed in seeds:
    proj = projection_matrix(flat.shape[1], 128, seed).numpy()
    projected = np.ascontiguousarray(flat @ proj)
    t = time.perf_counter()
    c = TwoRoundCoreset(ratio, None, 4096, "auto", 128, seed); c.add(flat); base = c.finish()
    tb = time.perf_counter() - t
    rows = [("default", base, tb)]
    for P, S in configs:
        t = time.perf_counter()
        idx = prepass(projected, len(base), P, S, 4096, np.random.default_rng(seed))
        rows.append((f"prepass-{P}-{S}", idx, time.perf_counter() - t))
    for name, ix, s in rows:
        print(json.dumps({"cat": cat, "cfg": cfgname, "seed": seed, "ratio": ratio, "variant": name,
                          "bank": len(ix), "s": round(s, 2),
                          "radius": round(covering_radius(projected, projected[ix]), 3),
                          "auroc": round(evaluate(ix), 4)}), flush=True)
