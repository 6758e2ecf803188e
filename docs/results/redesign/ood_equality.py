"""OOD benchmark equality check: run a small ISIC subset config, record every raw score array
passed to ood_metrics, save them (npz) and the report JSON. Usage: ood_eq.py OUTDIR"""
import csv, json, sys
from pathlib import Path
import numpy as np
import anomaly_inspect.evaluation.ood_benchmark as ob

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
src = Path("/work/shared/data/isic2017_256")
dst = out / "isic"
rows = list(csv.DictReader((src / "index.csv").open(newline="")))
ann = [r for r in rows if r["artefacts_annotated"] == "1"]
clean = [r for r in ann if r["ink"] == r["patches"] == r["ruler"] == "0"]
train = [r for r in clean if r["split"] == "train"]
pick = (train[::20][:30] + [r for r in clean if r["split"] != "train"][::15][:16]
        + [r for r in ann if r["ink"] == "1" and r["patches"] == "0"][::40][:10]
        + [r for r in ann if r["patches"] == "1"][::14][:10])
(dst / "labels").mkdir(parents=True, exist_ok=True)
with (dst / "index.csv").open("w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader()
    for r in pick:
        w.writerow(r | {"path": str(src / r["path"])})
(dst / "labels" / "artefact_colours.csv").write_bytes((src / "labels" / "artefact_colours.csv").read_bytes())
small = {"coreset_ratio": 0.05, "lof_k": 3}
scorers = ["feature_norm", "block_feature_norm", "nan", "mahalanobis", "knn", "msp", "head_nan",
           "l2norm", "line", "react", "dice", "vim", "odin_feature",
           {"name": "head_nan", "label": "head_nan_oriented", "orient": "pseudo_ood"},
           {"name": "mahalanobis", "label": "mahalanobis+colour", "nuisance": "colour"},
           {"name": "patchcore", "params": {"coreset_ratio": 0.01}},
           "patch_mahalanobis", {"name": "softpatch", "params": small},
           {"name": "tailedcore", "params": small}]
cfg = ob.OODBenchmarkConfig.from_dict({
    "benchmark": "isic", "data": {"root": str(dst)},
    "splits": ["ink_all", "charts_all", "charts_synth_similar"],
    "scorers": scorers, "cache_dir": str(out / "cache"), "features": {"batch_size": 16}})
calls = []
orig = ob.ood_metrics
def rec(a, b):
    calls.append((np.asarray(a).copy(), np.asarray(b).copy()))
    return orig(a, b)
ob.ood_metrics = rec
report = ob.run_ood_benchmark(cfg, progress=False)
np.savez(out / "scores.npz", **{f"{r['scorer']}|{r['split']}|{k}": c[i]
                                for r, c in zip(report["results"], calls) for i, k in enumerate(("id", "ood"))})
for k in ("timings_s", "peak_rss_mb", "config"):
    report.pop(k)
report["synthetic"].pop("folder", None)
for s in report["synthetic"].get("splits", {}).values():
    s.pop("manifest", None)
(out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
print(len(calls), "score pairs")
