"""Print the Markdown tables of docs/tailedcore.md from the evaluate-lt JSONs in this folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
METHODS = ("patchcore", "softpatch", "tailedcore")


def main() -> None:
    for setting in ("step_k4", "pareto"):
        runs = sorted(HERE.glob(f"{setting}_seed*.json"))
        if not runs:
            continue
        reports = [json.loads(p.read_text()) for p in runs]
        seeds = [r["split"]["seed"] for r in reports]
        cats = reports[0]["split"]["counts"].keys()
        print(f"\n### {setting} (noise 0.1), seeds {seeds}\n")
        print("| method | mean image AUROC (mean ± std over seeds) | " + " | ".join(cats) + " | fit s (mean) |")
        print("|---" * (len(cats) + 3) + "|")
        for m in METHODS:
            means = [r["mean_image_auroc"][m] for r in reports]
            per = {c: np.mean([x["image_auroc"] for r in reports for x in r["results"]
                               if x["method"] == m and x["category"] == c]) for c in cats}
            fit = np.mean([r["methods"][m]["fit_seconds"] for r in reports])
            print(f"| {m} | {np.mean(means):.4f} ± {np.std(means):.4f} | "
                  + " | ".join(f"{per[c]:.3f}" for c in cats) + f" | {fit:.0f} |")
        print("\n| seed | train (good+noise per class) | tail classes | TailedCore > PatchCore | "
              "tail images flagged / recall / precision | tail class detected (>50 % flagged) |")
        print("|---|---|---|---|---|---|")
        for r in reports:
            s, est = r["split"], r["class_size_estimates"]
            counts = ", ".join(f"{c} {v['good']}+{v['noise']}" for c, v in s["counts"].items())
            better = r["mean_image_auroc"]["tailedcore"] > r["mean_image_auroc"]["patchcore"]
            rec = est["tail_image_recall"]
            prec = est["tail_image_precision"]
            print(f"| {s['seed']} | {counts} | {', '.join(s['tail_classes'])} | {better} | "
                  f"{est['n_tail_images_flagged']} / {rec if rec is None else f'{rec:.2f}'} / "
                  f"{prec if prec is None else f'{prec:.2f}'} | {est['tail_classes_detected']} |")


if __name__ == "__main__":
    sys.exit(main())
