"""TwoRoundCoreset on bottle's 334,400 projected training patches: chunks pruned by share
(PRUNE_MIN_SHARE = 0.15, this change) against never (2.0, before), interleaved, best of 3."""
import time
import numpy as np
import torch
from anomaly_inspect.scorers import coreset as cs

p = np.load("/work/runs/prune/bottle_p128.npy")
torch.set_num_threads(2)
res, sel = {}, {}
for _ in range(3):
    for ratio, first in ((0.01, "auto"), (0.1, "auto"), (0.1, 0.2)):
        for share in ((2.0, 0), (0.15, 2 * 2**20)):
            cs.PRUNE_SHARE = share
            t = time.perf_counter()
            s = cs.two_round_coreset(p, ratio=ratio, first_round_ratio=first, projection_dim=None, seed=0)
            key = (ratio, first, share)
            res[key] = min(res.get(key, 1e9), time.perf_counter() - t)
            sel[key] = s
for ratio, first in ((0.01, "auto"), (0.1, "auto"), (0.1, 0.2)):
    b, a = res[(ratio, first, (2.0, 0))], res[(ratio, first, (0.15, 2 * 2**20))]
    same = np.array_equal(sel[(ratio, first, (2.0, 0))], sel[(ratio, first, (0.15, 2 * 2**20))])
    print(f"ratio {ratio} first_round {first}: before {b:.2f} s, after {a:.2f} s ({a/b:.2f}x), same bank {same}")
