import sys, time, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from anomaly_inspect.scorers.coreset import TwoRoundCoreset
rng=np.random.default_rng(0)
c=rng.standard_normal((500,232)).astype(np.float32)*3
x=(c[rng.integers(500,size=334000)]+rng.standard_normal((334000,232)).astype(np.float32)).astype(np.float32)
best=1e9
for r in range(2):
    cs=TwoRoundCoreset(0.1, seed=0); t0=time.time(); cs.add(x); cs.flush(); best=min(best,time.time()-t0)
print(sys.argv[1], 'round1 %.2f s'%best, cs._union_size)
