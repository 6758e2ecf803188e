"""Old (the coreset.py at $OLD) against new (anomaly_inspect on PYTHONPATH) _Greedy on the same
inputs: picks and values identical, best-of-N seconds each, one BLAS thread or two.

usage: python bench_greedy.py THREADS REPEATS input... where an input is a union_*.npz saved
by capture_unions.py (x, k, start) or feat.npy:ROWS:RATIO (a random ROWS-row subset of the
features, projected to 128-d as the coreset does, k = RATIO x ROWS, start 0)."""
import importlib.util
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from anomaly_inspect.scorers import coreset as new

spec = importlib.util.spec_from_file_location("anomaly_inspect.scorers.coreset_old", os.environ["OLD"])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)


def load(arg):
    if arg.endswith(".npz"):
        z = np.load(arg)
        return os.path.basename(arg), z["x"], int(z["k"]), int(z["start"])
    path, rows, ratio = arg.split(":")
    f = np.load(path, mmap_mode="r")
    idx = np.sort(np.random.default_rng(0).choice(len(f), int(rows), replace=False))
    proj = new.projection_matrix(f.shape[1], 128, 0).numpy()
    x = new.project_rows(np.asarray(f[idx]), proj)
    return f"{os.path.basename(path)}:{rows}", x, int(float(ratio) * int(rows)), 0


def run(mod, x, k, start, threads):
    with threadpool_limits(threads):
        t = time.perf_counter()
        g = mod._Greedy(x, start, k).extend(k)
        return time.perf_counter() - t, g


threads, repeats = int(sys.argv[1]), int(sys.argv[2])
total = {"old": 0.0, "new": 0.0}
all_same = True
for arg in sys.argv[3:]:
    name, x, k, start = load(arg)
    times = {"old": [], "new": []}
    for _ in range(repeats):
        for label, mod in (("old", old), ("new", new)):
            s, g = run(mod, x, k, start, threads)
            times[label].append(s)
            if label == "old":
                ref = g
            else:
                same_picks = np.array_equal(ref.picks, g.picks)
                same_values = np.array_equal(ref.values, g.values)
                same_min_d = np.array_equal(ref.min_d, g.min_d)
    for label in total:
        total[label] += min(times[label])
    all_same &= same_picks and same_values and same_min_d
    print(f"{name}: {x.shape[0]} x {x.shape[1]}, k {k}, {threads} thread(s): old {min(times['old']):.2f} s, "
          f"new {min(times['new']):.2f} s (best of {repeats}); picks identical {same_picks}, values "
          f"identical {same_values}, min_d identical {same_min_d}", flush=True)
print(f"all {len(sys.argv) - 3}: old {total['old']:.2f} s, new {total['new']:.2f} s; every pick, value and "
      f"distance identical: {all_same}")
