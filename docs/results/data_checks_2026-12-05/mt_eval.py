import numpy as np, time
from pathlib import Path
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.config import config_for_fit
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.evaluation.metrics import auroc
ds=load_mvtec('/work/shared/data/magnetic_tile','magnetic_tile')
cfg=config_for_fit(None)
bb,ex,sc=build(cfg,progress=False,patch_maps=False)
r=Runner(ex,None,False)
t=time.time(); r.fit({cfg.method:sc},[s.path for s in ds.train]); print('fit',time.time()-t,flush=True)
scores=np.concatenate([it.results[cfg.method].image_scores for it in r.score({cfg.method:sc},[s.path for s in ds.test])])
np.savez('mt_scores.npz',scores=scores,paths=np.array([str(s.path) for s in ds.test]),labels=np.array([s.label for s in ds.test]))
print('auroc',auroc(np.array([s.label for s in ds.test]),scores))
