"""Dihedral-view Mahalanobis on the ISIC real splits, as pre-registered in
docs/ood_benchmark.md (section "Dihedral-view Mahalanobis: pre-registration").

Pooled embedding of Lite0 (bundled weights, stretch, the model's normalisation, ONNX Runtime
f32) at 256 px (the ISIC configs' size) and 320 px (the toolkit's default); the 8 dihedral views
(rot90 k = 0..3, each with and without a horizontal flip) of every image on the normalised
square input. Fit: one Ledoit-Wolf Gaussian (the toolkit's `mahalanobis` scorer) on all views of
ID train. Score: mean over the 8 views of the squared Mahalanobis distance. Control: the identity
view alone, fit and score, which must reproduce the `mahalanobis` rows (ink_all 0.883 at 256 px,
0.902 at 320 px).

Run from the repository root:
    python docs/results/ood_issue18/dihedral_2026-12-05/dihedral.py OUT.json [--limit N]
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_inspect.core import Features
from anomaly_inspect.evaluation.ood import ood_metrics
from anomaly_inspect.evaluation.ood_benchmark import build_data, load_ood_config
from anomaly_inspect.pipeline.builders import build_backbone, build_extractor
from anomaly_inspect.pipeline.runner import Runner
from anomaly_inspect.scorers.distance import Mahalanobis

REAL = ["ink_all", "ink_similar", "ink_dissimilar", "charts_all", "charts_similar", "charts_dissimilar"]
VIEWS = [(k, flip) for k in range(4) for flip in (False, True)]  # (0, False) is the identity

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--limit", type=int, default=None, help="smoke test: the first N images of each set")
args = ap.parse_args()

cfg = load_ood_config("ood/isic_all")
cfg = dataclasses.replace(cfg, splits=REAL)
data, _ = build_data(cfg, Path("."))
sets = {"id_train": data.id_train, "id_test": data.id_test, **data.ood}
paths = {k: [s.path for s in v][: args.limit] for k, v in sets.items()}


def all_views(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (8B, 3, S, S), view-major: each image decoded once, its 8 views batched."""
    return torch.cat([torch.rot90(torch.flip(x, dims=[-1]) if flip else x, k=k, dims=(-2, -1))
                      for k, flip in VIEWS])


def view_pooled(runner: Runner, p: list, name: str) -> np.ndarray:
    """(views, images, dims) pooled features of every view of ``p``."""
    parts = [f.pooled.reshape(len(VIEWS), -1, f.pooled.shape[-1])
             for f in runner.iter_features(p, name, all_views)]
    return np.concatenate(parts, axis=1)


rows, t0 = [], time.perf_counter()
for size in (256, 320):
    c = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, image_size=size))
    runner = Runner(build_extractor(c, build_backbone(c), outputs=("pooled",)), progress=False)
    # pooled[set] : (views, images, dims)
    pooled = {k: view_pooled(runner, p, k) for k, p in paths.items()}
    print(f"{size} px: features in {time.perf_counter() - t0:.0f} s", flush=True)
    control = Mahalanobis().fit(Features(pooled=pooled["id_train"][0]))
    d8 = Mahalanobis().fit(Features(pooled=pooled["id_train"].reshape(-1, pooled["id_train"].shape[-1])))

    def scores(model: Mahalanobis, name: str, views: range) -> np.ndarray:
        return np.mean([model.score(Features(pooled=pooled[name][v])).image_scores for v in views], axis=0)

    for label, model, views in ((f"mahalanobis@{size} (control)", control, range(1)),
                                (f"mahalanobis_dihedral@{size}", d8, range(len(VIEWS)))):
        id_s = scores(model, "id_test", views)
        for split in REAL:
            m = ood_metrics(id_s, scores(model, split, views))
            rows.append({"scorer": label, "split": split, "auroc": round(m.auroc, 4),
                         "fpr_at_tpr80": round(m.fpr_at_tpr80, 4), "n_id": m.n_id, "n_ood": m.n_ood})

json.dump({"results": rows, "sets": {k: len(v) for k, v in paths.items()},
           "seconds": round(time.perf_counter() - t0, 1)}, open(args.out, "w"), indent=1)
print("| scorer | " + " | ".join(f"{s} ({len(paths[s])})" for s in REAL) + " |")
for lab in dict.fromkeys(r["scorer"] for r in rows):
    cells = {r["split"]: r for r in rows if r["scorer"] == lab}
    print(f"| {lab} | " + " | ".join(f"{cells[s]['auroc']:.3f} / {cells[s]['fpr_at_tpr80']:.2f}" for s in REAL) + " |")
