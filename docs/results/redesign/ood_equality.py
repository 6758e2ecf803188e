"""OOD benchmark equality check: a small ISIC subset (the slow test's), every scorer kind; every
raw score array passed to ``ood_metrics`` is saved (npz) with the report JSON (less timings).

Usage: PYTHONPATH=<tree>/inspect python ood_equality.py OUTDIR  (then ood_equality_compare.py)
"""

import json
import sys
from pathlib import Path

import numpy as np

import anomaly_inspect.evaluation.ood_benchmark as ob

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from test_ood_benchmark import _subset_index  # noqa: E402  (the tests' subset: 30 / 16 / 20 images)

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
root = _subset_index(Path("/work/shared/data/isic2017_256"), out / "isic")
small = {"coreset_ratio": 0.05, "lof_k": 3}
scorers = ["feature_norm", "block_feature_norm", "nan", "mahalanobis", "knn", "msp", "head_nan",
           "l2norm", "line", "react", "dice", "vim", "odin_feature",
           {"name": "head_nan", "label": "head_nan_oriented", "orient": "pseudo_ood"},
           {"name": "mahalanobis", "label": "mahalanobis+colour", "nuisance": "colour"},
           {"name": "patchcore", "params": {"coreset_ratio": 0.01}},
           "patch_mahalanobis", {"name": "softpatch", "params": small},
           {"name": "tailedcore", "params": small}]
cfg = ob.OODBenchmarkConfig.from_dict({
    "benchmark": "isic", "data": {"root": str(root)},
    "splits": ["ink_all", "charts_all", "charts_synth_similar"],
    "scorers": scorers, "cache_dir": str(out / "cache"), "features": {"batch_size": 16}})
calls = []
metrics = ob.ood_metrics


def recording(id_scores, ood_scores):
    calls.append((np.asarray(id_scores).copy(), np.asarray(ood_scores).copy()))
    return metrics(id_scores, ood_scores)


ob.ood_metrics = recording
report = ob.run_ood_benchmark(cfg, progress=False)
np.savez(out / "scores.npz", **{f"{r['scorer']}|{r['split']}|{k}": c[i] for r, c in
                                zip(report["results"], calls, strict=True)
                                for i, k in enumerate(("id", "ood"))})
for key in ("timings_s", "peak_rss_mb", "config"):
    report.pop(key)
report["synthetic"].pop("folder", None)
for split in report["synthetic"].get("splits", {}).values():
    split.pop("manifest", None)
(out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
print(len(calls), "score pairs")
