"""Issue 20 timing, side by side on the same cached features: the chunked coreset of the issue's
time (one round, one thread), the same on two threads (until 2026-12-02c), the default (auto: the same at 10 %), and round 1 keeping 0.2 with round 2 in cells."""
import sys, time, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from anomaly_inspect.scorers.coreset import TwoRoundCoreset
flat = np.load(sys.argv[2])
res = {}
for rep in range(3):
    for name, threads, first in [("one_round_1thread", 1, None), ("one_round_2threads", 2, None), ("default_2threads", 2, "auto"), ("cells_0.2_2threads", 2, 0.2)]:
        torch.set_num_threads(threads)
        t = time.perf_counter()
        c = TwoRoundCoreset(0.1, None, 4096, first, 128, 0); c.add(flat); c.finish()
        res.setdefault(name, []).append(round(time.perf_counter() - t, 2))
for k, v in res.items():
    print(k, v, "best", min(v))
