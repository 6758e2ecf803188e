import numpy as np
from pathlib import Path
from PIL import Image
from anomaly_inspect.evaluation.metrics import auroc
z=np.load('mt_scores.npz'); s=z['scores']; P=[Path(p) for p in z['paths']]; y=z['labels']
d=Path('/work/shared/data/magnetic_tile/magnetic_tile')
def f(p):
    a=np.asarray(Image.open(p).convert('L').resize((32,32)),np.float32).ravel(); a-=a.mean(); return a/(np.linalg.norm(a)+1e-6)
A=np.stack([f(p) for p in sorted((d/'train/good').glob('*'))])
T=np.stack([f(p) for p in P]); mx=(T@A.T).max(1)
for t in (0.995,0.99):
    sib=(y==0)&(mx>t); nos=(y==0)&(mx<=t); an=y==1
    print(t,'test/good with train sibling',sib.sum(),'median score %.3f'%np.median(s[sib]),' without',nos.sum(),'median %.3f'%np.median(s[nos]))
    print('   AUROC anomalies vs sibling normals %.4f ; vs non-sibling normals %.4f ; all %.4f'%(auroc(np.r_[np.zeros(sib.sum()),np.ones(an.sum())],np.r_[s[sib],s[an]]),auroc(np.r_[np.zeros(nos.sum()),np.ones(an.sum())],np.r_[s[nos],s[an]]),auroc(y,s)))
