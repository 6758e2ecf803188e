"""Multi-stage Mahalanobis rows on the ISIC benchmark, as pre-registered in docs/ood_benchmark.md
(section "Multi-stage Mahalanobis: pre-registration"). Features: Lite0 at 256 px (ONNX Runtime),
spatial mean (and std) of each of the five stages plus the pooled embedding.

Run from the repository root:
    python docs/results/ood_issue18/stages_2026-12-02d/stages.py --cache /tmp/isic_stages OUT.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_inspect.data.loader import BatchStream
from anomaly_inspect.evaluation.ood import ood_metrics
from anomaly_inspect.evaluation.ood_benchmark import build_data, load_ood_config
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.scorers.base import Features
from anomaly_inspect.scorers.distance import Mahalanobis

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--cache", default="/tmp/isic_stages")
args = ap.parse_args()
cfg = load_ood_config("configs/ood/isic_all.yaml")
cfg.cache_dir = str(Path(args.cache) / "ood")
data, _ = build_data(cfg, Path("."))
sets = {"id_train": data.id_train, "id_test": data.id_test, **data.ood}
bb = Backbone("tf_efficientnet_lite0", layers=[0, 1, 2, 3, 4])
tcfg = bb.transform_config(256)
feat_file = Path(args.cache) / "stage_stats.npz"
t0 = time.perf_counter()
if feat_file.exists():
    z = np.load(feat_file)
    feats = {k: {s: z[f"{k}|{s}"] for s in ("mean", "std")} for k in sets}
else:
    feats = {}
    for name, samples in sets.items():
        means, stds = [], []
        with BatchStream([s.path for s in samples], tcfg, 32) as batches:
            for batch in batches:
                assert not batch.errors, batch.errors
                inter, _, pooled = bb.forward_full(torch.from_numpy(batch.images))
                maps = [m.float() for m in inter]
                means.append(np.concatenate([m.mean((2, 3)).numpy() for m in maps] + [pooled.numpy()], 1))
                stds.append(np.concatenate([m.std((2, 3)).numpy() for m in maps], 1))
        feats[name] = {"mean": np.concatenate(means), "std": np.concatenate(stds)}
        print(name, len(samples), f"{time.perf_counter() - t0:.1f}s", flush=True)
    np.savez(feat_file, **{f"{k}|{s}": v for k, d in feats.items() for s, v in d.items()})
chs = bb.channels
cuts = np.cumsum([0] + chs + [1280])
scuts = np.cumsum([0] + chs)
stage_names = [f"s{i}_stride{st}" for i, st in enumerate(bb.strides)] + ["pooled"]


def stage_feature(d: dict, i: int, meanstd: bool) -> np.ndarray:
    m = d["mean"][:, cuts[i]:cuts[i + 1]]
    if meanstd and i < len(chs):
        m = np.concatenate([m, d["std"][:, scuts[i]:scuts[i + 1]]], 1)
    return m


def maha(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    s = Mahalanobis()
    s.fit(Features(pooled=train))
    return s.score(Features(pooled=x)).image_scores


def crossfit(train: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).permutation(len(train))
    out = np.empty(len(train))
    for part in np.array_split(idx, folds):
        rest = np.setdiff1d(idx, part)
        out[part] = maha(train[rest], train[part])
    return out


rows = []
for meanstd in (False, True):
    label = "mahalanobis_stages_meanstd" if meanstd else "mahalanobis_stages"
    total = {n: 0.0 for n in sets if n != "id_train"}
    for i, sname in enumerate(stage_names):
        tr = stage_feature(feats["id_train"], i, meanstd)
        cv = crossfit(tr)
        mu, sd = cv.mean(), cv.std()
        per = {}
        for n in total:
            sc = maha(tr, stage_feature(feats[n], i, meanstd))
            per[n] = sc
            total[n] = total[n] + (sc - mu) / sd
        for split in data.ood:
            m = ood_metrics(per["id_test"], per[split])
            rows.append({"scorer": f"{label}:{sname}", "split": split, "auroc": round(m.auroc, 4),
                         "fpr_at_tpr80": round(m.fpr_at_tpr80, 4), "n_id": m.n_id, "n_ood": m.n_ood})
    for split in data.ood:
        m = ood_metrics(total["id_test"], total[split])
        rows.append({"scorer": label, "split": split, "auroc": round(m.auroc, 4),
                     "fpr_at_tpr80": round(m.fpr_at_tpr80, 4), "n_id": m.n_id, "n_ood": m.n_ood})
json.dump({"results": rows, "sets": {k: len(v) for k, v in sets.items()},
           "seconds": round(time.perf_counter() - t0, 1)}, open(args.out, "w"), indent=1)
labels = list(dict.fromkeys(r["scorer"] for r in rows))
splits = list(data.ood)
print("| scorer | " + " | ".join(f"{s} ({len(sets[s])})" for s in splits) + " |")
for lab in labels:
    cells = {r["split"]: r for r in rows if r["scorer"] == lab}
    print(f"| {lab} | " + " | ".join(f"{cells[s]['auroc']:.3f} / {cells[s]['fpr_at_tpr80']:.2f}" for s in splits) + " |")
