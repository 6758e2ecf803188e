"""Experiment: round 1 with each chunk's greedy seeded by the picks of the chunks before it
(min-distance initialised from a faiss search), against the default two-round and, for
reference, nothing else. Screw 152-d (longtail_first_embedding), 10 %."""
import json, os, sys, time, math
import numpy as np, faiss
from anomaly_inspect import load_config, load_mvtec
from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers.coreset import TwoRoundCoreset, covering_radius, projection_matrix
from anomaly_inspect.scorers.patchcore import PatchCore, image_patches

cat, cfgname = sys.argv[1], sys.argv[2]
d = f"/tmp/s43/feat_{cat}_{cfgname}"
if not os.path.exists(d + "_train.npy"):
    from anomaly_inspect import ModelConfig
    cfg = load_config(cfgname) if cfgname != "default" else ModelConfig()
    ds = load_mvtec("/work/shared/data/mvtec_ad", cat)
    runner = Runner(build(cfg, progress=False)[1], progress=False)
    tr = runner.extract([s.path for s in ds.train], "train").features
    te = runner.extract([s.path for s in ds.test], "test").features
    np.save(d + "_train.npy", image_patches(tr)); np.save(d + "_test.npy", te.patches)
    np.save(d + "_labels.npy", np.array([s.label for s in ds.test]))
flat = np.load(d + "_train.npy"); test = np.load(d + "_test.npy"); labels = np.load(d + "_labels.npy")
ratio = float(sys.argv[3]); seeds = [int(s) for s in sys.argv[4].split(",")]
faiss.omp_set_num_threads(2)


def evaluate(idx):
    sc = PatchCore(index="flat", progress=False)
    sc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
    return float(auroc(labels, sc.score(Features(test)).image_scores))


TS = {"search": 0.0, "greedy": 0.0, "add": 0.0}


def seeded(projected, k_total, chunk, rng):
    n = len(projected)
    perm = rng.permutation(n)
    parts = np.array_split(perm, math.ceil(n / chunk))
    if os.environ.get("INIT") == "hnsw":
        index = faiss.IndexHNSWFlat(projected.shape[1], 16); index.hnsw.efConstruction = 40; index.hnsw.efSearch = 16
    else:
        index = faiss.IndexFlatL2(projected.shape[1])
    picks = []
    for p in parts:
        x = np.ascontiguousarray(projected[p])
        k = min(len(p), math.ceil(k_total * len(p) / n))
        sq = (x * x).sum(1)
        t0 = time.perf_counter()
        if index.ntotal:
            min_d, _ = index.search(x, 1); min_d = min_d[:, 0].astype(np.float64)
            j = int(np.argmax(min_d))
        else:
            min_d = np.full(len(p), np.inf); j = int(rng.integers(len(p)))
        TS["search"] += time.perf_counter() - t0; t0 = time.perf_counter()
        sel = []
        for _ in range(k):
            sel.append(j)
            dj = sq - 2 * x @ x[j] + sq[j]
            np.minimum(min_d, dj, out=min_d)
            j = int(np.argmax(min_d))
        sel = np.array(sel)
        TS["greedy"] += time.perf_counter() - t0; t0 = time.perf_counter()
        index.add(x[sel]); picks.append(p[sel])
        TS["add"] += time.perf_counter() - t0
    return np.concatenate(picks)


for seed in seeds:
    proj = projection_matrix(flat.shape[1], 128, seed).numpy()
    projected = np.ascontiguousarray(flat @ proj)
    t = time.perf_counter()
    c = TwoRoundCoreset(ratio, None, 4096, "auto", 128, seed); c.add(flat); base = c.finish()
    tb = time.perf_counter() - t
    t = time.perf_counter()
    idx = seeded(projected, len(base), 4096, np.random.default_rng(seed))
    ts = time.perf_counter() - t
    print({k: round(v, 2) for k, v in TS.items()})
    for name, ix, s in (("default", base, tb), ("seeded-" + os.environ.get("INIT", "flat"), idx, ts)):
        print(json.dumps({"cat": cat, "cfg": cfgname, "seed": seed, "ratio": ratio, "variant": name,
                          "bank": len(ix), "s": round(s, 2),
                          "radius": round(covering_radius(projected, projected[ix]), 3),
                          "auroc": round(evaluate(ix), 4)}), flush=True)
