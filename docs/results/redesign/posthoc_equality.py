"""ReAct / DICE / ViM / ODIN-feature: fit on seeded random pooled features and save; write the
scores, the saved files' hashes, the parameters and the constructor errors to OUTDIR/rec.json.

Usage: PYTHONPATH=<tree>/inspect python posthoc_equality.py OUTDIR  (then cmp two rec.json)
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from anomaly_inspect.core import Features
from anomaly_inspect.scorers import build_scorer

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
x, y = rng.standard_normal((120, 32)).astype(np.float32), rng.integers(0, 3, 120)
test = Features(pooled=rng.standard_normal((40, 32)).astype(np.float32))
rec = {}
cases = [("react", {}), ("dice", {"sparsity": 80.0}), ("vim", {"dim": 8}), ("odin_feature", {}), ("vim", {})]
for name, params in cases:
    s = build_scorer(name, hidden=16, epochs=5, **params).fit(Features(pooled=x), y)
    d = out / f"{name}{len(rec)}"
    s.save(d)
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir()) if f.is_file()}
    rec[d.name] = {"params": s.get_params(), "scores": s.score(test).image_scores.tolist(), "files": files,
                   "type_params": list(type(s).constructor_params())}
    for bad in ({"percentile": 0.0}, {"sparsity": 100.0}, {"dim": 16}, {"temperature": 0.0}):
        try:
            build_scorer(name, hidden=16, **bad)
        except (ValueError, TypeError) as e:
            rec[f"err {name} {bad}"] = str(e)
(out / "rec.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
