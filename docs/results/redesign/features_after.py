import sys, numpy as np, torch
from pathlib import Path
from anomaly_inspect.config import FeatureConfig
from anomaly_inspect.core import Features
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.evaluation.ood_benchmark import extract_arrays
from anomaly_inspect.features.extractor import FeatureExtractor
from anomaly_inspect.features.views import ViewFeatures
from anomaly_inspect.pipeline import Runner
from anomaly_inspect.data.samples import Sample
from anomaly_inspect.data.pseudo_ood import jigsaw
from anomaly_inspect.progress import Progress
paths = sorted(Path("/work/shared/data/isic2017_256").rglob("*.jpg"))[:12]
bb = Backbone(runtime="torch")
fc = FeatureConfig(batch_size=8)
mk = lambda want: Runner(FeatureExtractor(bb, fc.image_size, None, 8, fc.embedding(), patches=want, pooled=True, blocks=True), progress=False)
patches = []
out = extract_arrays(mk(True), [Sample(p) for p in paths], patches.append, Progress(None, "", enabled=False))
gen = torch.Generator().manual_seed(0)
pseudo = extract_arrays(mk(False), [Sample(p) for p in paths], None, Progress(None, "", enabled=False), image_fn=lambda x: jigsaw(x, 4, gen))
fx = FeatureExtractor(bb, fc.image_size, None, 8, fc.embedding(), patches=True, pooled=True)
views = Features.concat(list(ViewFeatures(fx, paths[:3], "rotflip", progress=False).iter_views(range(3))))
np.savez(sys.argv[1], patches=np.concatenate([p.patches for p in patches]), views=views.patches,
         **out, **{"pseudo_" + k: v for k, v in pseudo.items()})
