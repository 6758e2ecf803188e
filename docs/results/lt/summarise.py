"""Print the Markdown tables of docs/tailedcore.md from the evaluate-lt JSONs in a folder.

Usage: python docs/results/lt/summarise.py [FOLDER]   (default: this folder)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
METHODS = ("patchcore", "softpatch", "tailedcore")


def cost(path: Path) -> str:
    """'wall / cpu' from a /usr/bin/time -v report, or '-' when there is none."""
    if not path.is_file():
        return "-"
    f = dict(line.strip().rsplit(": ", 1) for line in path.read_text().splitlines() if ": " in line)
    h_m_s = [float(v) for v in f["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")]
    wall = sum(v * 60 ** i for i, v in enumerate(reversed(h_m_s)))
    cpu = float(f["User time (seconds)"]) + float(f["System time (seconds)"])
    return f"{wall / 60:.1f} / {cpu / 60:.1f} min"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for setting in ("step_k4", "pareto"):
        runs = sorted(folder.glob(f"{setting}_seed*.json"))
        if not runs:
            continue
        reports = [json.loads(p.read_text()) for p in runs]
        seeds = [r["split"]["seed"] for r in reports]
        cats = reports[0]["split"]["counts"].keys()
        print(f"\n### {setting} (noise 0.1), seeds {seeds}\n")
        print("| method | mean image AUROC (mean ± std over seeds) | " + " | ".join(cats) + " | fit s (mean) |")
        print("|---" * (len(cats) + 3) + "|")
        methods = [m for m in METHODS if m in reports[0]["mean_image_auroc"]]
        for m in methods:
            means = [r["mean_image_auroc"][m] for r in reports]
            per = {c: np.mean([x["image_auroc"] for r in reports for x in r["results"]
                               if x["method"] == m and x["category"] == c]) for c in cats}
            fit = np.mean([r["methods"][m]["fit_seconds"] for r in reports])
            print(f"| {m} | {np.mean(means):.4f} ± {np.std(means):.4f} | "
                  + " | ".join(f"{per[c]:.3f}" for c in cats) + f" | {fit:.0f} |")
        print("\n| seed | train (good+noise per class) | tail classes | TailedCore > PatchCore | "
              "tail images flagged / recall / precision | tail class detected (>50 % flagged) | "
              "wall / CPU (user+sys) |")
        print("|---|---|---|---|---|---|---|")
        for r in reports:
            s, est = r["split"], r["class_size_estimates"]
            seed = s["seed"]
            counts = ", ".join(f"{c} {v['good']}+{v['noise']}" for c, v in s["counts"].items())
            mean = r["mean_image_auroc"]
            better = (mean["tailedcore"] > mean["patchcore"]
                      if "tailedcore" in mean and "patchcore" in mean else "-")
            rec = est["tail_image_recall"]
            prec = est["tail_image_precision"]
            print(f"| {s['seed']} | {counts} | {', '.join(s['tail_classes'])} | {better} | "
                  f"{est['n_tail_images_flagged']} / {rec if rec is None else f'{rec:.2f}'} / "
                  f"{prec if prec is None else f'{prec:.2f}'} | {est['tail_classes_detected']} | "
                  f"{cost(folder / f'{setting}_seed{seed}.time')} |")


if __name__ == "__main__":
    sys.exit(main())
