import sys, numpy as np, importlib.util
from threadpoolctl import threadpool_limits
spec = importlib.util.spec_from_file_location("anomaly_inspect.scorers.coreset_old", sys.argv[2])
cs = importlib.util.module_from_spec(spec); spec.loader.exec_module(cs)
z = np.load(sys.argv[1]); x, k, start = z["x"], int(z["k"]), int(z["start"])
with threadpool_limits(1):
    g = cs._Greedy(x, start, k)
    for frac in (0.1, 0.2, 0.4, 0.7, 1.0):
        g.extend(int(k * frac))
        i = int(g.min_d.argmax()); c = x[i]; t = len(g._picks); cc = c @ c
        dc = cs._sq_distances(g.centres[:t], g.csq[:t], c, cc)
        plain = (dc.take(g.assign) <= g.lim).sum()
        Lc = np.full(t, -np.inf, np.float32); np.maximum.at(Lc, g.assign, g.lim)
        passc = dc <= Lc
        cnt = np.bincount(g.assign, minlength=t)
        print(f"t {t}: plain rows {plain}, centres passing {passc.sum()} holding {cnt[passc].sum()} rows")
