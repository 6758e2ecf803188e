# auroc before (HEAD worktree at /tmp/wt_auroc: positives probed unsorted) and after (positives
# sorted first): equal on 300 random cases with and without ties; timed at magnetic tile's
# pixel count (583 test maps of 320 x 320 = 59.7 M values, 2 % positive), one process
import sys, time, importlib.util, numpy as np
sys.path.insert(0, '/work/main/inspect')
from anomaly_inspect.evaluation.metrics import auroc as new
spec = importlib.util.spec_from_file_location('old_m', '/tmp/wt_auroc/inspect/anomaly_inspect/evaluation/metrics.py')
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
rng = np.random.default_rng(0)
bad = 0
for i in range(300):
    n = int(rng.integers(2, 3000))
    lab = rng.random(n) < rng.uniform(0.05, 0.95); lab[0] = True; lab[1] = False
    sc = rng.integers(0, rng.integers(2, 50), n).astype(np.float32) if i % 2 else rng.standard_normal(n).astype(np.float32)
    if old.auroc(lab, sc) != new(lab, sc): bad += 1
print('mismatches in 300 cases:', bad)
lab = rng.random(583 * 320 * 320) < 0.02
for ties in (False, True):
    sc = (rng.standard_normal(lab.size) + lab).astype(np.float32)
    if ties:
        sc = np.round(sc, 3)
    for f in (old.auroc, new, old.auroc, new):
        t = time.perf_counter(); v = f(lab, sc)
        print('ties' if ties else 'no ties', 'before' if f is old.auroc else 'after ', v, '%.2f s' % (time.perf_counter() - t))
