"""Bottle training patches (default config), projected to 128-d as the coreset sees them."""
import numpy as np
import torch
from anomaly_inspect.config import load_config
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.pipeline import Runner, build
from anomaly_inspect.scorers.coreset import random_projection
from anomaly_inspect.scorers.patchcore import image_patches

cfg = load_config(None)
ds = load_mvtec("/work/shared/data/mvtec_ad", "bottle")
runner = Runner(build(cfg, progress=False)[1], progress=False)
f = runner.extract([s.path for s in ds.train], "train").features
x = image_patches(f)
x = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, np.float32)
p = random_projection(torch.from_numpy(x), 128, 0).numpy()
np.save("/work/runs/prune/bottle_p128.npy", p)
print(x.shape, p.shape)
