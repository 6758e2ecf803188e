import sys, time, collections
import anomaly_inspect.scorers.patchcore as pcm
from anomaly_inspect.scorers import nn_index
acc = collections.defaultdict(float)
def wrap(obj, name, label):
    f = getattr(obj, name)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); acc[label] += time.perf_counter() - t; return r
    setattr(obj, name, g)
wrap(nn_index.NearestNeighbours, "search", "nn.search")
calls = []
_se = nn_index.NearestNeighbours.search_exact
def se(self, q, k=1):
    t = time.perf_counter(); r = _se(self, q, k); calls.append((len(q), time.perf_counter() - t)); return r
nn_index.NearestNeighbours.search_exact = se
wrap(pcm, "exact_image_maxima", "exact_image_maxima")
wrap(pcm, "reweight_image_scores", "reweight")
wrap(pcm.PatchCore, "score", "PatchCore.score")
from anomaly_inspect.cli import main
rc = main()
print("exact calls", len(calls), "queries", sum(c for c, _ in calls), [(c, round(t, 3)) for c, t in calls[-12:]], file=sys.stderr)
print({k: round(v, 2) for k, v in acc.items()}, file=sys.stderr)
sys.exit(rc)
