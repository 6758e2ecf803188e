import resource, time, sys, numpy as np, torch
torch.set_num_threads(2)
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.features.runtime import OnnxRunner
size = int(sys.argv[1]); subs = [int(s) for s in sys.argv[2].split(",")]
bb = Backbone(__import__("os").environ.get("BB","tf_efficientnet_lite0"), runtime="onnxruntime")
path = bb.export((size, size), "stages")
x = np.random.default_rng(0).standard_normal((32, 3, size, size), dtype=np.float32)
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
r0 = rss()
r = OnnxRunner(path, sys.argv[3] if len(sys.argv)>3 else "onnxruntime", sys.argv[4] if len(sys.argv)>4 else "f32")
def run(sub):
    outs = [r(x[i:i + sub]) for i in range(0, 32, sub)]
    return outs
run(subs[0]); print("arena+session growth MB at first sub-batch", subs[0], round(rss() - r0))
res = {s: [] for s in subs}
for rep in range(3):
    for sub in res:
        t = time.perf_counter()
        for _ in range(3): run(sub)
        res[sub].append(96 / (time.perf_counter() - t))
for sub, v in res.items():
    print(f"{size}px sub-batch {sub}: best {max(v):.1f} img/s, runs {[round(a,1) for a in v]}")
