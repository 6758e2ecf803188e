import time, numpy as np, torch
torch.set_num_threads(2)
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.features.runtime import OnnxRunner
bb = Backbone("tf_efficientnet_lite0", runtime="onnxruntime")
path = bb.export((320, 320), "stages")
x = np.random.default_rng(0).standard_normal((32, 3, 320, 320), dtype=np.float32)
for i in range(3):
    t = time.perf_counter(); r = OnnxRunner(path); t1 = time.perf_counter(); r(x); t2 = time.perf_counter(); r(x); t3 = time.perf_counter()
    print(f"session {t1-t:.3f} s, first batch {t2-t1:.3f} s, second {t3-t2:.3f} s")
