"""Compare two ood_equality.py outputs: every raw score array bit for bit, and the report JSON.

Usage: python ood_equality_compare.py BEFORE_DIR AFTER_DIR
"""

import json
import sys

import numpy as np

a, b = sys.argv[1:3]
with open(f"{a}/report.json") as fa, open(f"{b}/report.json") as fb:
    ra, rb = json.load(fa), json.load(fb)
sa, sb = np.load(f"{a}/scores.npz"), np.load(f"{b}/scores.npz")
assert sorted(sa.files) == sorted(sb.files), "keys differ"
bad = [k for k in sa.files if not np.array_equal(sa[k], sb[k])]
print(f"{len(sa.files)} score arrays, {sum(sa[k].size for k in sa.files)} scores; "
      f"bit-identical: {not bad}; differing: {bad}")
print("report JSON identical (less timings / peak RSS / paths):", ra == rb)
for k in ra:
    if ra[k] != rb.get(k):
        print("  differs:", k)
