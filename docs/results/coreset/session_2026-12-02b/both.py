import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, "/tmp/s20")
from adaptive import Features, PatchCore, auroc, chunked, covering_radius, projection_matrix, run

tag = sys.argv[1]
seed = int(os.environ.get("SEED", 0))
d = f"/tmp/s20/feat_{tag}"
flat = np.load(d + "_train.npy")
test = np.load(d + "_test.npy")
labels = np.load(d + "_labels.npy")
X = np.ascontiguousarray(flat @ projection_matrix(flat.shape[1], 128, seed).numpy())


def score(idx):
    sc = PatchCore(index="flat", progress=False)
    sc.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
    return round(float(auroc(labels, sc.score(Features(test)).image_scores)), 4), round(
        covering_radius(X, X[idx]), 3
    )


for ratio in map(float, sys.argv[2].split(",")):
    for _rep in range(int(os.environ.get("REPS", 1))):
        idx, s1 = chunked(flat, ratio, seed)
        t = time.perf_counter()
        idx2, computed, rounds = run(X, ratio, 4096, seed)
        s2 = time.perf_counter() - t
        a1, r1 = score(idx)
        a2, r2 = score(idx2)
        print(
            json.dumps(
                {
                    "tag": tag,
                    "seed": seed,
                    "ratio": ratio,
                    "chunked": [a1, r1, round(s1, 2)],
                    "cells": [a2, r2, round(s2, 2), computed, rounds],
                }
            ),
            flush=True,
        )
