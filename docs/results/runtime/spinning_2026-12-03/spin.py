import time, numpy as np, torch, onnxruntime as ort
torch.set_num_threads(2)
from anomaly_inspect.features.backbone import Backbone
from anomaly_inspect.features import runtime as rt
path = str(Backbone("tf_efficientnet_lite0", runtime="onnxruntime").export((320, 320), "stages"))
def session(spin):
    o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
s = {sp: session(sp) for sp in ("0", "1")}
x = np.random.default_rng(0).standard_normal((32, 3, 320, 320), dtype=np.float32)
name = s["0"].get_inputs()[0].name
res = {sp: [] for sp in s}
for rep in range(4):
    for sp, sess in s.items():
        t = time.perf_counter()
        for _ in range(3):
            for i in range(0, 32, 2): sess.run(None, {name: x[i:i+2]})
        res[sp].append(96 / (time.perf_counter() - t))
for sp, v in res.items(): print("allow_spinning", sp, "best", round(max(v), 1), [round(a) for a in v])
