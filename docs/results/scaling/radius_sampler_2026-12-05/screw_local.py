"""The screw one-machine (streamed_fit) row's radius with both samplers: 2026-12-04's
rng(seed).choice over all projections vs today's ProbeSample (expect 3.5767 / 3.6464)."""
import time, numpy as np
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers.coreset import projection_matrix
from anomaly_inspect.scorers.nn_index import ProbeSample
from anomaly_inspect.scorers.patchcore import PatchCore, image_patches
from anomaly_inspect.evaluation.coreset_bench import radius_with_bar
t0 = time.time()
cfg = ModelConfig()
ds = load_mvtec("../shared/data/mvtec_ad", "screw")
paths = [s.path for s in ds.train]
runner = Runner(build(cfg, progress=False)[1], progress=False)
local = PatchCore(**{**cfg.scorer, "seed": cfg.seed, "progress": False})
proj, kept = [], []
sample = ProbeSample(100000, seed=cfg.seed)
def tee(batches):
    for f in batches:
        x = image_patches(f)
        if not proj: proj.append(projection_matrix(x.shape[1], local.projection_dim, cfg.seed).numpy())
        r = x @ proj[0]; kept.append(r); sample.add(r); yield f
local.fit_batches(tee(runner.iter_features(paths, "fit")), len(paths))
allp = np.concatenate(kept); n = len(allp)
bank = local.memory_bank @ proj[0]
old = allp[np.sort(np.random.default_rng(cfg.seed).choice(n, 100000, replace=False))]
print("images", len(paths), "patches", n, "bank", len(bank), f"{time.time()-t0:.0f} s")
print("old sampler (2026-12-04):", round(radius_with_bar(old, bank, "o", False), 4))
print("ProbeSample (2026-12-05):", round(radius_with_bar(sample.rows, bank, "n", False), 4))
print(f"{time.time()-t0:.0f} s")
