"""One fold bank of tune's 4+8+16 candidate on bottle: round 1 and round 2 timed; the union saved."""
import time, numpy as np, sys, glob, json
from pathlib import Path
from anomaly_inspect.tuning.stage_cache import StageMaps
from anomaly_inspect.tuning.candidates import Candidate
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.scorers.coreset import TwoRoundCoreset
d = [p for p in glob.glob("/tmp/tp_cache/maps/tf_efficientnet_lite0-320-stretch-*")
     if json.load(open(p + "/done"))["n"] == 209 and 4 in json.load(open(p + "/done"))["strides"]]
maps = StageMaps(Path(d[0]), [4, 8, 16, 32], 320)
cand = Candidate("tf_efficientnet_lite0", 320, (4, 8, 16), "rows", "stretch")
emb = cand.config(ModelConfig()).features.embedding()
idx = np.arange(0, 209)[np.arange(209) % 3 != 0]
c = TwoRoundCoreset(0.01, first_round_ratio=0.1, seed=0, keep_rows=True)
t0 = time.perf_counter()
for f in maps.iter_features(idx, cand.strides, emb, 32):
    p = f.patches
    c.add(p.reshape(-1, p.shape[-1]))
c.flush()
t1 = time.perf_counter()
x = np.concatenate(c._projected)
np.save("/tmp/prof/union.npy", x)
print("rows", c.n_seen, "union", len(x), "target", c.target, "cells", c.round_two_cells(len(x)))
t2 = time.perf_counter()
sel = c._select(None)
t3 = time.perf_counter()
np.save("/tmp/prof/sel.npy", sel)
print(f"round1+embed {t1-t0:.2f} s, round2 {t3-t2:.2f} s")
