import time, numpy as np, torch, sys
torch.set_num_threads(2)
from anomaly_inspect.features import runtime as rt
path = sys.argv[1]
r = rt.OnnxRunner(path, "onnxruntime", "int8")
x = np.random.default_rng(0).standard_normal((32, 3, 320, 320), dtype=np.float32)
res = {s: [] for s in (2, 4, 8, 32)}
for rep in range(3):
    for s in res:
        rt.MICRO_BATCH_PIXELS = s * 320 * 320
        r(x); t = time.perf_counter()
        for _ in range(3): r(x)
        res[s].append(96 / (time.perf_counter() - t))
for s, v in res.items(): print(f"int8 {s} images per call: best {max(v):.1f} img/s {[round(a) for a in v]}")
