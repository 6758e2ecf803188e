"""Round 1 (add) and round 2 (finish) separately, pruned-by-share vs never, interleaved, best of 3."""
import time
import numpy as np
import torch
from anomaly_inspect.scorers import coreset as cs

p = np.load("/work/runs/prune/bottle_p128.npy")
torch.set_num_threads(2)
res = {}
for _ in range(3):
    for ratio, first in ((0.01, "auto"), (0.1, 0.2)):
        for share in ((2.0, 0), (0.15, 2 * 2**20)):
            cs.PRUNE_SHARE = share
            c = cs.TwoRoundCoreset(ratio, None, 4096, first, None, 0)
            t = time.perf_counter(); c.add(p); c._flush(); t1 = time.perf_counter(); c.finish(); t2 = time.perf_counter()
            for name, v in (("round1", t1 - t), ("round2", t2 - t1)):
                key = (ratio, first, share, name)
                res[key] = min(res.get(key, 1e9), v)
for k, v in sorted(res.items(), key=str):
    print(k, f"{v:.2f}")
