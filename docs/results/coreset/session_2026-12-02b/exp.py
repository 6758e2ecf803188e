"""Session script: screw 152-d features once, then coreset variants at one ratio (AUROC/radius/s)."""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.environ.get("SRC", "/work/bench/inspect"))
from anomaly_inspect import load_config, load_mvtec
from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.metrics import auroc
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers.coreset import TwoRoundCoreset, covering_radius, projection_matrix
from anomaly_inspect.scorers.patchcore import PatchCore, image_patches

cat, cfgname, tag = sys.argv[1], sys.argv[2], sys.argv[3]
d = f"/tmp/s20/feat_{tag}"
if not os.path.exists(d + "_train.npy"):
    cfg = load_config(cfgname) if cfgname != "default" else None
    from anomaly_inspect import ModelConfig

    cfg = cfg or ModelConfig()
    ds = load_mvtec(
        "/work/shared/data/mvtec_ad"
        if cat != "magnetic_tile"
        else "/work/shared/data/magnetic_tile",
        cat,
    )
    runner = Runner(build(cfg, progress=False)[1], progress=False)
    tr = runner.extract([s.path for s in ds.train], "train").features
    te = runner.extract([s.path for s in ds.test], "test").features
    np.save(d + "_train.npy", image_patches(tr))
    np.save(d + "_test.npy", te.patches)
    np.save(d + "_labels.npy", np.array([s.label for s in ds.test]))
flat = np.load(d + "_train.npy")
test = np.load(d + "_test.npy")
labels = np.load(d + "_labels.npy")
proj = projection_matrix(flat.shape[1], 128, int(os.environ.get("SEED", 0))).numpy()
projected = flat @ proj
ratio = float(sys.argv[4])
for spec in sys.argv[5:]:
    chunk, first = spec.split(":")
    chunk = None if chunk == "none" else int(chunk)
    first = None if first == "none" else (first if first == "auto" else float(first))
    seed = int(os.environ.get("SEED", 0))
    t = time.perf_counter()
    c = TwoRoundCoreset(ratio, None, chunk, first, 128, seed)
    c.add(flat)
    idx = c.finish()
    dt = time.perf_counter() - t
    sc = PatchCore(index="flat", progress=False)
    sc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
    a = auroc(labels, sc.score(Features(test)).image_scores)
    r = covering_radius(projected, projected[idx])
    print(
        json.dumps(
            {
                "cat": cat,
                "tag": tag,
                "seed": seed,
                "ratio": ratio,
                "spec": spec,
                "bank": len(idx),
                "s": round(dt, 2),
                "radius": round(r, 3),
                "auroc": round(float(a), 4),
            }
        ),
        flush=True,
    )
