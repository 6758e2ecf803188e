"""Old greedy on every captured union: total seconds, and the share of each part of _update_pruned."""
import sys, glob, time, numpy as np, importlib.util
from threadpoolctl import threadpool_limits
spec = importlib.util.spec_from_file_location("anomaly_inspect.scorers.coreset_old", sys.argv[3])
cs = importlib.util.module_from_spec(spec); spec.loader.exec_module(cs)
pc = time.perf_counter
acc = {}
def add(name, t): acc[name] = acc.get(name, 0.0) + t
def upd(self, c):
    t0 = pc()
    t = len(self._picks) - 1
    if t == len(self.centres):
        self.centres = np.concatenate([self.centres, np.empty_like(self.centres)])
        self.csq = np.concatenate([self.csq, np.empty_like(self.csq)])
    cc = c @ c
    dc = cs._sq_distances(self.centres[:t], self.csq[:t], c, cc)
    t1 = pc(); add("dc gemv", t1 - t0)
    rows = np.flatnonzero(dc.take(self.assign) <= self.lim)
    t2 = pc(); add("row test", t2 - t1)
    if len(rows) * cs.PRUNE_GATHER_COST > len(self.x):
        d = cs._sq_distances(self.x, self.sq, c, cc)
        moved = np.flatnonzero(d < self.min_d)
        d = d[moved]
        t3 = pc(); add("full gemv", t3 - t2)
    else:
        d = cs._sq_distances(self.x[rows], self.sq.take(rows), c, cc)
        better = d < self.min_d.take(rows)
        moved, d = rows[better], d[better]
        t3 = pc(); add("gather gemv", t3 - t2)
    self.min_d[moved] = d
    self.lim[moved] = self._bound(d)
    self.assign[moved] = t
    self.centres[t] = c
    self.csq[t] = cc
    add("writes", pc() - t3)
cs._Greedy._update_pruned = upd
tot = {}
with threadpool_limits(int(sys.argv[1])):
    for f in sorted(glob.glob(sys.argv[2])):
        z = np.load(f); x, k, start = z["x"], int(z["k"]), int(z["start"])
        t0 = pc(); cs._Greedy(x, start, k).extend(k); s = pc() - t0
        key = f"{len(x)//1000}k"; tot[key] = tot.get(key, 0) + s
print("greedy seconds by union size:", {a: round(b, 2) for a, b in tot.items()}, "sum", round(sum(tot.values()), 2))
print("inside _update_pruned:", {a: round(b, 2) for a, b in acc.items()}, "rest (argmax, python):", round(sum(tot.values()) - sum(acc.values()), 2))
