import numpy as np
from PIL import Image
from pathlib import Path
d=Path('/work/shared/data/magnetic_tile/magnetic_tile')
tr=sorted((d/'train/good').glob('*')); te=sorted((d/'test/good').glob('*')); an=sorted(p for p in (d/'test').rglob('*.jpg') if p.parent.name!='good')
def f(p):
    a=np.asarray(Image.open(p).convert('L').resize((32,32)),np.float32).ravel(); a-=a.mean(); return a/(np.linalg.norm(a)+1e-6)
A=np.stack([f(p) for p in tr]); B=np.stack([f(p) for p in te]); C=np.stack([f(p) for p in an])
S=B@A.T; m=S.max(1)
St=A@A.T; np.fill_diagonal(St,-1)
print('test/good->train nn corr quantiles',np.quantile(m,[.5,.9,.99,1]).round(4),'n>0.99',(m>0.99).sum())
print('train->train',np.quantile(St.max(1),[.5,.9,.99,1]).round(4))
ma=(C@A.T).max(1); print('anomalous->train',np.quantile(ma,[.5,.9,.99,1]).round(4),'n>0.99',(ma>0.99).sum())
for i in np.argsort(-m)[:5]: print(te[i].name, tr[S[i].argmax()].name, m[i], Image.open(te[i]).size, Image.open(tr[S[i].argmax()]).size)
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
X=np.vstack([A,B]); G=X@X.T; np.fill_diagonal(G,0)
for t in (0.995,0.99,0.98):
    n,lab=connected_components(sp.csr_matrix(G>t),directed=False)
    sizes=np.bincount(lab); lt=lab[:len(A)]; le=lab[len(A):]
    print(t,'components',n,'size hist',np.bincount(sizes)[:10],'test/good with a train sibling',np.isin(le,lt).sum(),'/',len(le),' train with a test sibling',np.isin(lt,le).sum(),'/',len(lt))
