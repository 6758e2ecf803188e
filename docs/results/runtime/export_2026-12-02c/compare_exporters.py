"""TorchScript exporter (on static_same_padding's copy) vs torch.export: export seconds, ONNX
Runtime img/s (interleaved, best of 5, batch 32, 2 threads) and max relative difference from
torch f32, on the real weights; for the first graph also OpenVINO f32 / bf16 on both exports.
Run: python compare_exporters.py OUT.json"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_inspect.features import runtime as rt
from anomaly_inspect.features.backbone import Backbone

torch.set_num_threads(2)
CASES = [("tf_efficientnet_lite0", 320, (2, 3), "stages"), ("tf_efficientnet_lite0", 448, (1, 2, 3, 4), "stages"),
         ("tf_efficientnet_lite1", 320, (2, 3), "stages"), ("tf_efficientnet_lite2", 320, (2, 3), "full")]
rows = []
for name, size, layers, outputs in CASES:
    bb = Backbone(name, layers=list(layers), runtime="torch")
    x = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
    graph = rt._StagesGraph(bb.model, layers, outputs).eval()
    with torch.no_grad():
        ref = [t.numpy() for t in graph(torch.from_numpy(x[:4]))]
    tmp = Path(tempfile.mkdtemp())
    secs, runners = {}, {}
    for kind in ("torchscript", "torch.export"):
        real = torch.onnx.export
        if kind == "torch.export":  # make the first choice fail: the fallback is torch.export
            def only_dynamo(*a, dynamo=True, **k):
                if not dynamo:
                    raise RuntimeError("skip")
                return real(*a, dynamo=True, **k)
            torch.onnx.export = only_dynamo
        t = time.perf_counter()
        path = rt.export_onnx(bb.model, layers, (size, size), outputs, tmp / f"{kind}.onnx")
        secs[kind] = time.perf_counter() - t
        torch.onnx.export = real
        runners[kind] = rt.OnnxRunner(path)
        if not rows and rt.runtime_available("openvino"):
            for prec in ("f32", "bf16"):
                runners[f"{kind} openvino {prec}"] = rt.OnnxRunner(path, "openvino", prec)
    best = dict.fromkeys(runners, 1e9)
    for _ in range(5):
        for kind, r in runners.items():
            t = time.perf_counter()
            r(x)
            best[kind] = min(best[kind], time.perf_counter() - t)
    for kind, r in runners.items():
        diff = max(float(np.abs(o - w).max() / np.abs(w).max()) for o, w in zip(r(x[:4]), ref, strict=True))
        rows.append({"backbone": name, "size": size, "layers": list(layers), "outputs": outputs,
                     "exporter": kind, "export_s": round(secs[kind.split()[0]], 2),
                     "img_per_s": round(32 / best[kind], 1), "max_rel_diff_vs_torch": diff})
        print(json.dumps(rows[-1]), flush=True)
json.dump(rows, open(sys.argv[1] if len(sys.argv) > 1 else "exporters.json", "w"), indent=1)
