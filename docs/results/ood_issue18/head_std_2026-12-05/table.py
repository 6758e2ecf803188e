"""Print a benchmark JSON's rows as the docs' markdown table: AUROC / FPR@TPR80 per split.
Use: python table.py RUN.json SPLIT [SPLIT ...]"""
import json
import sys

d = json.load(open(sys.argv[1]))
splits = sys.argv[2:]
cells: dict[str, dict[str, str]] = {}
for r in d["results"]:
    cells.setdefault(r["scorer"], {})[r["split"]] = f"{r['auroc']:.3f} / {r['fpr_at_tpr80']:.2f}"
n = {r["split"]: r["n_ood"] for r in d["results"]}
print("| scorer | " + " | ".join(f"{s} ({n[s]})" for s in splits) + " |")
print("|---" * (len(splits) + 1) + "|")
for scorer, row in cells.items():
    print(f"| {scorer} | " + " | ".join(row.get(s, "–") for s in splits) + " |")
