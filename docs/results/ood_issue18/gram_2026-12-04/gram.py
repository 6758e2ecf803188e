"""Label-free GRAM row (Sastry & Oore, ICML 2020) on the ISIC benchmark, as pre-registered in
docs/ood_benchmark.md (section "GRAM: pre-registration"). Features: Lite0 at 256 px (ONNX
Runtime), the five stage outputs; Gram row sums at powers 1..10; min / max over a seeded 80 % of
ID train, each stage's deviation divided by its mean over the other 20 %.

Run from the repository root:
    python docs/results/ood_issue18/gram_2026-12-04/gram.py --cache /tmp/isic_gram OUT.json
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

POWERS = range(1, 11)

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--cache", default="/tmp/isic_gram")
args = ap.parse_args()
cfg = load_ood_config("configs/ood/isic_all.yaml")
cfg.cache_dir = str(Path(args.cache) / "ood")
data, _ = build_data(cfg, Path("."))
sets = {"id_train": data.id_train, "id_test": data.id_test, **data.ood}
bb = Backbone("tf_efficientnet_lite0", layers=[0, 1, 2, 3, 4])
tcfg = bb.transform_config(256)
n_stages = len(bb.channels)


def gram_features(m: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) stage map -> (B, len(POWERS) * C): sign(g)|g|^(1/p) of the row sums g of
    (F^p)(F^p)^T, the authors' form."""
    f = m.double().flatten(2)
    out = []
    for p in POWERS:
        fp = f ** p
        g = torch.matmul(fp, fp.transpose(1, 2)).sum(2)
        out.append(g.sign() * g.abs() ** (1.0 / p))
    return torch.cat(out, 1).numpy()


feat_file = Path(args.cache) / "gram_features.npz"
t0 = time.perf_counter()
if feat_file.exists():
    z = np.load(feat_file)
    feats = {k: [z[f"{k}|{i}"] for i in range(n_stages)] for k in sets}
else:
    feats = {}
    for name, samples in sets.items():
        per = [[] for _ in range(n_stages)]
        with BatchStream([s.path for s in samples], tcfg, 32) as batches:
            for batch in batches:
                assert not batch.errors, batch.errors
                inter, _, _ = bb.forward_full(torch.from_numpy(batch.images))
                for i, m in enumerate(inter):
                    per[i].append(gram_features(m))
        feats[name] = [np.concatenate(v) for v in per]
        print(name, len(samples), f"{time.perf_counter() - t0:.1f}s", flush=True)
    feat_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(feat_file, **{f"{k}|{i}": v for k, d in feats.items() for i, v in enumerate(d)})

n_train = len(data.id_train)
perm = np.random.default_rng(0).permutation(n_train)
n_fit = int(round(0.8 * n_train))
fit_idx, val_idx = perm[:n_fit], perm[n_fit:]


def deviation(g: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (np.maximum(lo - g, 0) / (np.abs(lo) + 1e-6) + np.maximum(g - hi, 0) / (np.abs(hi) + 1e-6)).sum(1)


per_stage = {n: [] for n in sets if n != "id_train"}
total = {n: 0.0 for n in per_stage}
for i in range(n_stages):
    tr = feats["id_train"][i]
    lo, hi = tr[fit_idx].min(0), tr[fit_idx].max(0)
    scale = deviation(tr[val_idx], lo, hi).mean()
    for n in total:
        d = deviation(feats[n][i], lo, hi) / scale
        per_stage[n].append(d)
        total[n] = total[n] + d

rows = []
stage_names = [f"gram:s{i}_stride{st}" for i, st in enumerate(bb.strides)]
for i, sname in enumerate(stage_names):
    for split in data.ood:
        m = ood_metrics(per_stage["id_test"][i], per_stage[split][i])
        rows.append({"scorer": sname, "split": split, "auroc": round(m.auroc, 4),
                     "fpr_at_tpr80": round(m.fpr_at_tpr80, 4), "n_id": m.n_id, "n_ood": m.n_ood})
for split in data.ood:
    m = ood_metrics(total["id_test"], total[split])
    rows.append({"scorer": "gram", "split": split, "auroc": round(m.auroc, 4),
                 "fpr_at_tpr80": round(m.fpr_at_tpr80, 4), "n_id": m.n_id, "n_ood": m.n_ood})
json.dump({"results": rows, "sets": {k: len(v) for k, v in sets.items()}, "n_fit": n_fit,
           "n_val": len(val_idx), "seconds": round(time.perf_counter() - t0, 1)},
          open(args.out, "w"), indent=1)
labels = list(dict.fromkeys(r["scorer"] for r in rows))
splits = list(data.ood)
print("| scorer | " + " | ".join(f"{s} ({len(sets[s])})" for s in splits) + " |")
for lab in labels:
    cells = {r["split"]: r for r in rows if r["scorer"] == lab}
    print(f"| {lab} | " + " | ".join(f"{cells[s]['auroc']:.3f} / {cells[s]['fpr_at_tpr80']:.2f}" for s in splits) + " |")
