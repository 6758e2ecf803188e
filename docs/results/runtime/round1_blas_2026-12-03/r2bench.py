# Round 2 alone at 1 % (round 1 done first; 334k random clustered rows, 232-d) on 2, 1, 2, 1 BLAS threads
import sys, time, numpy as np, torch
from anomaly_inspect.scorers.coreset import TwoRoundCoreset
rng=np.random.default_rng(0)
c=rng.standard_normal((500,232)).astype(np.float32)*3
x=(c[rng.integers(500,size=334000)]+rng.standard_normal((334000,232)).astype(np.float32)).astype(np.float32)
cs=TwoRoundCoreset(0.01, seed=0); cs.add(x); cs.flush()
import copy
for t in (2,1,2,1):
    torch.set_num_threads(t); c2=copy.deepcopy(cs); t0=time.time(); sel=c2.finish(); print(t,'threads round2 %.2f s'%(time.time()-t0), len(sel), sel[:3])
