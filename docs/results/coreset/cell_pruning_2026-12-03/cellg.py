import time, numpy as np, sys
from threadpoolctl import threadpool_limits
from anomaly_inspect.scorers import coreset as C

def sqd(x, sq, c, cc):
    d = x @ c; d *= -2.0; d += sq; d += cc; return d

def ranges(starts, lens):
    tot = int(lens.sum())
    if tot == 0: return np.empty(0, np.int64), np.empty(0, np.int64)
    offs = np.cumsum(lens) - lens
    idx = np.arange(tot, dtype=np.int64) + np.repeat(starts - offs, lens)
    return idx, offs

def cell_greedy(x, k, start, m0=512, slack=1e-3, stats=None):
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    picks = [start]
    c = x[start]
    min_d = sqd(x, sq, c, c @ c)
    assign = np.zeros(n, np.int32)
    # phase 1: full GEMVs
    while len(picks) < min(k, m0):
        i = int(min_d.argmax()); picks.append(i)
        d = sqd(x, sq, x[i], x[i] @ x[i])
        moved = d < min_d
        min_d[moved] = d[moved]; assign[moved] = len(picks) - 1
    if len(picks) >= k: return np.array(picks)
    # cells: Voronoi cells of the first m0 centres, rows sorted by cell
    order = np.argsort(assign, kind="stable")
    xs = x[order]; sqs = sq[order]; mins = min_d[order]
    counts = np.bincount(assign, minlength=len(picks))
    G = len(picks)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = counts > 0
    cm = x[np.array(picks)][keep]; csq = sq[np.array(picks)][keep]
    starts, counts = starts[keep], counts[keep]
    rho = np.sqrt(np.maximum.reduceat(mins, starts))  # each row's distance to its cell centre
    maxmin = np.maximum.reduceat(mins, starts)
    abs_slack = slack * float(sq.max())
    checked = 0
    while len(picks) < k:
        g = int(maxmin.argmax()); v = maxmin[g]
        seg = mins[starts[g]:starts[g] + counts[g]]
        # tie-break as np.argmax on the original order: smallest original index among maxima
        cand_cells = np.flatnonzero(maxmin == v)
        best = None
        for h in cand_cells:
            s = mins[starts[h]:starts[h] + counts[h]]
            for j in np.flatnonzero(s == v):
                o = order[starts[h] + j]
                if best is None or o < best[0]: best = (o, starts[h] + j)
        i_orig, i = best
        picks.append(i_orig)
        c = xs[i]; cc = sqs[i]
        dm = sqd(cm, csq, c, cc)
        np.maximum(dm, 0, out=dm)
        lower = np.sqrt(dm) - rho
        passing = np.flatnonzero((lower <= 0) | (lower * lower * (1 - slack) <= maxmin + abs_slack))
        idx, offs = ranges(starts[passing], counts[passing])
        checked += len(idx)
        d = sqd(xs[idx], sqs[idx], c, cc)
        cur = mins[idx]
        np.minimum(cur, d, out=cur)
        mins[idx] = cur
        if len(idx):
            maxmin[passing] = np.maximum.reduceat(cur, offs)
    if stats is not None: stats["checked"] = checked
    return np.array(picks)

x = np.load(sys.argv[1]) if len(sys.argv) > 1 else np.load("/tmp/prof/union.npy")
k = int(sys.argv[2]) if len(sys.argv) > 2 else 8896
start = 12345
with threadpool_limits(2):
    for m0 in (256, 1024):
        for rep in range(1):
            t = time.perf_counter(); ref = C._Greedy(x, start, k).extend(k).picks; t_ref = time.perf_counter() - t
            st = {}
            t = time.perf_counter(); new = cell_greedy(x, k, start, m0, stats=st); t_new = time.perf_counter() - t
            print(f"m0 {m0}: current {t_ref:.2f} s, cells {t_new:.2f} s, identical {np.array_equal(ref, new)}, rows checked/step {st.get('checked',0)/max(1,k-m0):.0f} of {len(x)}")
