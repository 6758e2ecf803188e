"""Ablation of the classifier-head settings for head NAN / head feature norm on cached ISIC features.

Reads the feature cache written by ``anomaly-inspect ood-benchmark`` (pooled features of ID train,
ID test and the OOD sets, matched by their image counts) and prints AUROC of head_nan,
head_feature_norm and l2norm for a small grid of head settings. The benchmark's defaults were
fixed before this ablation; it only reports how much the settings matter.

Usage: python docs/ood_head_ablation.py CACHE_DIR [--isic-root ../shared/data/isic2017_256]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from anomaly_inspect.data.isic import isic_index_benchmark
from anomaly_inspect.evaluation.ood import ood_metrics
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import build_scorer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache_dir", type=Path)
    ap.add_argument("--isic-root", type=Path, default=Path("../shared/data/isic2017_256"))
    args = ap.parse_args()
    data = isic_index_benchmark(args.isic_root, splits=["ink_all", "charts_all"])
    want = {"id_train": len(data.id_train), "id_test": len(data.id_test),
            "ink_all": len(data.ood["ink_all"]), "charts_all": len(data.ood["charts_all"])}
    arrays = {}
    for js in args.cache_dir.glob("*.json"):
        desc = json.loads(js.read_text())
        if desc.get("extra", {}).get("kind") != "pooled+block_norms":
            continue
        for name, n in want.items():
            if desc["n_files"] == n:
                arrays[name] = np.load(js.with_suffix(".npz"))["pooled"]
    missing = sorted(set(want) - set(arrays))
    if missing:
        raise SystemExit(f"{args.cache_dir}: no cached features for {missing}")
    y = data.id_train_labels
    print("scorer             hidden  wd      dropout  epochs  ink_all  charts_all")
    for name, hidden, wd, dropout, epochs in itertools.product(
            ["head_nan", "head_feature_norm", "l2norm"], [64, 256, 1024], [1e-4, 1e-2], [0.0, 0.5], [20, 60]):
        s = build_scorer(name, hidden=hidden, weight_decay=wd, dropout=dropout, epochs=epochs)
        s.fit(Features(pooled=arrays["id_train"]), y)
        sid = s.score(Features(pooled=arrays["id_test"])).image_scores
        a = [ood_metrics(sid, s.score(Features(pooled=arrays[k])).image_scores).auroc
             for k in ("ink_all", "charts_all")]
        print(f"{name:<18} {hidden:>6}  {wd:<6g}  {dropout:<7}  {epochs:>6}  {a[0]:.3f}    {a[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
