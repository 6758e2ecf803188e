import sys
import time

import numpy as np

sys.path.insert(0, sys.argv[1])
from anomaly_inspect.scorers.coreset import TwoRoundCoreset

rng = np.random.default_rng(0)
x = rng.standard_normal((200000, 232)).astype(np.float32)
best = 1e9
for _ in range(2):
    t = time.perf_counter()
    c = TwoRoundCoreset(0.1)
    c.add(x)
    idx = c.finish()
    best = min(best, time.perf_counter() - t)
np.save(sys.argv[2], idx)
print(sys.argv[1], f"best {best:.2f} s", len(idx))
