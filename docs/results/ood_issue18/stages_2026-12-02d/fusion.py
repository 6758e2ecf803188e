"""Global + local fusion row on ISIC, as pre-registered in docs/ood_benchmark.md (fourth part):
mean of mahalanobis (pooled) and patchcore_10pct, each standardised by the median / MAD of its
5-fold cross-fitted ID-train scores. Same features as `ood-benchmark --config isic_all.yaml`.

Run from the repository root:
    python docs/results/ood_issue18/stages_2026-12-02d/fusion.py OUT.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.ood import ood_metrics
from anomaly_inspect.evaluation.ood_benchmark import build_data, extract_arrays, load_ood_config
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.features.extractor import FeatureExtractor
from anomaly_inspect.pipeline.runner import Runner
from anomaly_inspect.progress import Progress
from anomaly_inspect.scorers import build_scorer, get_scorer_class
from anomaly_inspect.tuning.rank import NormalCalibration, fuse

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--folds", type=int, default=5)
args = ap.parse_args()
t0 = time.perf_counter()
cfg = load_ood_config("configs/ood/isic_all.yaml")
cfg.cache_dir = "/tmp/isic_cache"
data, _ = build_data(cfg, Path("."))
f = cfg.features
backbone = Backbone(cfg.backbone.name, cfg.backbone.layers, cfg.backbone.weights, seed=cfg.seed)
runner = Runner(FeatureExtractor(backbone, f.image_size, f.crop_size, f.batch_size, f.embedding(),
                                 patches=True, pooled=True, resize=f.resize, blocks=True), progress=False)
sets = {"id_train": data.id_train, "id_test": data.id_test, **data.ood}


def patchcore():
    return build_scorer("patchcore", seed=cfg.seed, **get_scorer_class("patchcore").runtime_kwargs(progress=False))


def maha():
    return build_scorer("mahalanobis")


# ID train: pooled + patches kept (734 x 1024 x 152 floats, 0.46 GB)
collected = []
train = extract_arrays(runner, data.id_train, collected.append, Progress(len(data.id_train), "train"))
tp = Features.concat(collected)
pooled_train = train["pooled"]
print(f"train extracted {time.perf_counter() - t0:.0f}s", flush=True)

rng = np.random.default_rng(cfg.seed)
fold = np.empty(len(pooled_train), np.int64)
fold[rng.permutation(len(fold))] = np.arange(len(fold)) % args.folds
cv = {"mahalanobis": np.empty(len(fold)), "patchcore_10pct": np.empty(len(fold))}
for k in range(args.folds):
    bank, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
    m = maha()
    runner.fit_features({"m": m}, Features(pooled=pooled_train[bank]))
    cv["mahalanobis"][held] = m.score(Features(pooled=pooled_train[held])).image_scores
    p = patchcore()
    runner.fit_features({"p": p}, tp.subset(bank))
    cv["patchcore_10pct"][held] = p.score(tp.subset(held)).image_scores
    print(f"fold {k} {time.perf_counter() - t0:.0f}s", flush=True)
cal = {k: NormalCalibration.fit(v) for k, v in cv.items()}

m, p = maha(), patchcore()
runner.fit_features({"m": m}, Features(pooled=pooled_train))
runner.fit_features({"p": p}, tp)
del tp, collected
scores = {k: {} for k in ("mahalanobis", "patchcore_10pct", "fused_global_local")}
for name, samples in sets.items():
    if name == "id_train":
        continue
    parts = []
    arr = extract_arrays(runner, samples, parts.append, Progress(len(samples), name))
    scores["mahalanobis"][name] = m.score(Features(pooled=arr["pooled"])).image_scores
    scores["patchcore_10pct"][name] = np.concatenate([p.score(x).image_scores for x in parts])
    scores["fused_global_local"][name] = fuse([scores["mahalanobis"][name], scores["patchcore_10pct"][name]],
                                              [cal["mahalanobis"], cal["patchcore_10pct"]])
    print(name, f"{time.perf_counter() - t0:.0f}s", flush=True)
rows = []
for label, sc in scores.items():
    for split in data.ood:
        r = ood_metrics(sc["id_test"], sc[split])
        rows.append({"scorer": label, "split": split, "auroc": round(r.auroc, 4),
                     "fpr_at_tpr80": round(r.fpr_at_tpr80, 4), "n_id": r.n_id, "n_ood": r.n_ood})
json.dump({"results": rows, "calibration": {k: c.to_dict() for k, c in cal.items()},
           "sets": {k: len(v) for k, v in sets.items()}, "seconds": round(time.perf_counter() - t0, 1)},
          open(args.out, "w"), indent=1)
splits = list(data.ood)
print("| scorer | " + " | ".join(f"{s} ({len(sets[s])})" for s in splits) + " |")
for label in scores:
    cells = {r["split"]: r for r in rows if r["scorer"] == label}
    print(f"| {label} | " + " | ".join(f"{cells[s]['auroc']:.3f} / {cells[s]['fpr_at_tpr80']:.2f}" for s in splits) + " |")
