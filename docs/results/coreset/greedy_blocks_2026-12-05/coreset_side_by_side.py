"""TwoRoundCoreset with the old coreset.py ($OLD) and the new (anomaly_inspect on PYTHONPATH) on
saved features: the same positions, and seconds each (one run each, old first).

usage: python coreset_side_by_side.py feat.npy RATIO CHUNK FIRST_ROUND  (CHUNK "none": exact greedy)"""
import importlib.util
import os
import sys
import time

import numpy as np
import torch

from anomaly_inspect.scorers import coreset as new

spec = importlib.util.spec_from_file_location("anomaly_inspect.scorers.coreset_old", os.environ["OLD"])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

feat = np.load(sys.argv[1])
ratio, chunk = float(sys.argv[2]), None if sys.argv[3] == "none" else int(sys.argv[3])
first = float(sys.argv[4]) if sys.argv[4] not in ("auto", "none") else (None if sys.argv[4] == "none" else "auto")
out = {}
for label, mod in (("old", old), ("new", new)):
    t = time.perf_counter()
    c = mod.TwoRoundCoreset(ratio, None, chunk, first, 128, seed=0)
    c.add(feat)
    out[label] = (c.finish(), time.perf_counter() - t)
print(f"{os.path.basename(sys.argv[1])} {feat.shape}, ratio {ratio}, chunk {chunk}, first round {first}, "
      f"{torch.get_num_threads()} torch threads: old {out['old'][1]:.1f} s, new {out['new'][1]:.1f} s; "
      f"{len(out['new'][0])} positions identical: {np.array_equal(out['old'][0], out['new'][0])}", flush=True)
