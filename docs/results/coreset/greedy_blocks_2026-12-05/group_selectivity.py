"""Rejected groups filter (coreset_with_groups.py): rows the plain per-row test passes vs rows in the
groups the group test reaches, per tenth of the greedy. usage: union.npz BLOCK_ROWS BLOCK_SHARE"""
import sys, time, numpy as np
from threadpoolctl import threadpool_limits
import importlib.util, os
spec = importlib.util.spec_from_file_location("anomaly_inspect.scorers.coreset_groups", os.path.join(os.path.dirname(os.path.abspath(__file__)), "coreset_with_groups.py"))
cs = importlib.util.module_from_spec(spec); spec.loader.exec_module(cs)
z = np.load(sys.argv[1]); x, k, start = z["x"], int(z["k"]), int(z["start"])
if len(sys.argv) > 2: cs.BLOCK_ROWS = int(sys.argv[2])
if len(sys.argv) > 3: cs.BLOCK_SHARE = float(sys.argv[3])
stats = []
orig = cs._Blocks.candidates
g = None
def cand(self, dc, cap):
    c = orig(self, dc, cap)
    plain = int((dc.take(g.assign) <= g.lim).sum())
    n = (self.starts[self._hit + 1] - self.starts[self._hit]).sum() if c is not None else -1
    stats.append((len(dc), plain, -1 if c is None else len(c)))
    return c
cs._Blocks.candidates = cand
with threadpool_limits(1):
    g = cs._Greedy(x, start, k); g.extend(k)
s = np.array(stats)
n = len(x)
for lo in range(0, len(s), len(s)//10):
    part = s[lo:lo+len(s)//10]
    print(f"t {part[0,0]}-{part[-1,0]}: plain rows mean {part[:,1].mean():.0f} ({part[:,1].mean()/n:.3f}), cand mean {part[part[:,2]>=0,2].mean() if (part[:,2]>=0).any() else -1:.0f}, cand-path steps {(part[:,2]>=0).mean():.2f}")
