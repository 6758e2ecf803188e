"""Print the rows of this folder's bench-coreset JSONs, and the means over seeds of the 1 % rows."""
import json
import sys
from collections import defaultdict
from pathlib import Path

folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
means = defaultdict(list)
for f in sorted(folder.glob("*.json")):
    for r in json.load(open(f))["rows"]:
        print(f"{f.stem:24s} {r['ratio']:5} {r['variant']:10s} AUROC {r['image_auroc']:.4f} "
              f"radius {r['radius']:.4f} {r['seconds']:8.2f} s")
        if "_1pct_s" in f.stem:
            means[(f.stem.split("_1pct")[0], r["variant"])].append(r["image_auroc"])
for (name, variant), v in sorted(means.items()):
    print(f"mean of {len(v)} seeds: {name} 1 % {variant}: {sum(v) / len(v):.4f} ({', '.join(f'{x:.4f}' for x in v)})")
