import sys, timeit, numpy as np, importlib.util
from threadpoolctl import threadpool_limits
spec = importlib.util.spec_from_file_location("anomaly_inspect.scorers.coreset_old", sys.argv[2])
cs = importlib.util.module_from_spec(spec); spec.loader.exec_module(cs)
z = np.load(sys.argv[1]); x, k, start = z["x"], int(z["k"]), int(z["start"])
T = lambda f: round(min(timeit.repeat(f, number=30, repeat=5)) / 30 * 1e6, 1)
with threadpool_limits(2):
    g = cs._Greedy(x, start, k)
    for kk in (k // 8, k // 4, k):
        g.extend(kk)
        i = int(g.min_d.argmax()); c = x[i]; t = len(g._picks); cc = c @ c
        dc = cs._sq_distances(g.centres[:t], g.csq[:t], c, cc)
        rows = np.flatnonzero(dc.take(g.assign) <= g.lim)
        a64 = g.assign.astype(np.intp)
        buf = np.empty_like(x); tmp = np.empty(len(x), np.float32); mask = np.empty(len(x), bool)
        r = {
          "x[rows]": T(lambda: x[rows]),
          "x.take(rows,0)": T(lambda: x.take(rows, axis=0)),
          "take out=": T(lambda: np.take(x, rows, axis=0, out=buf[:len(rows)])),
          "gemv on gathered": T(lambda: x[rows] @ c),
          "gemv on buf": T(lambda: np.take(x, rows, axis=0, out=buf[:len(rows)]) @ c),
          "test int32": T(lambda: np.flatnonzero(dc.take(g.assign) <= g.lim)),
          "test intp": T(lambda: np.flatnonzero(dc.take(a64) <= g.lim)),
          "test intp bufs": T(lambda: np.flatnonzero(np.less_equal(dc.take(a64, out=tmp), g.lim, out=mask))),
        }
        xb = np.take(x, rows, axis=0, out=buf[:len(rows)])
        same = np.array_equal(xb @ c, x[rows] @ c)
        print(f"t {t}, rows {len(rows)}: same {same}", r, flush=True)
