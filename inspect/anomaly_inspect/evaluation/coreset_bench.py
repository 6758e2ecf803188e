"""Coreset quality and cost side by side: covering radius, time and image AUROC per ratio.

Features of the training and test images are extracted once; each coreset
variant then picks a bank from the same training patches, and the bank is
scored with exact search, so the variants differ only in the coreset. The
covering radius is the largest distance from a training patch to its nearest
centre, on the same random projection the coreset selects on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..config import ModelConfig
from ..data.mvtec import AnomalyDataset
from ..pipeline import build
from ..progress import Progress
from ..scorers.coreset import TwoRoundCoreset, covering_radius, projection_matrix
from ..scorers.patchcore import PatchCore
from .metrics import auroc

# name -> (chunk_size, first_round_ratio) given the config's chunk size and first-round ratio
VARIANTS = {
    "two_round": lambda chunk, first: (chunk, first),
    "one_round": lambda chunk, first: (chunk, None),  # the plain chunked greedy (before the fix)
    "exact": lambda chunk, first: (None, None),
}


def bench_coreset(dataset: AnomalyDataset, cfg: ModelConfig, ratios: Sequence[float],
                  variants: Sequence[str] = ("two_round", "exact"),
                  progress: bool = True) -> list[dict]:
    """One row per (ratio, variant): bank size, coreset seconds, covering radius, image AUROC."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown coreset variants {unknown}; choose from {sorted(VARIANTS)}")
    params = {"chunk_size": 4096, "first_round_ratio": 0.1, "projection_dim": 128, **cfg.scorer}
    _, extractor, _ = build(cfg, progress=progress)
    with Progress(len(dataset.train), "extract train", enabled=progress) as bar:
        train = extractor.extract([s.path for s in dataset.train], bar)
    with Progress(len(dataset.test), "extract test", enabled=progress) as bar:
        test = extractor.extract([s.path for s in dataset.test], bar)
    labels = np.array([s.label for s in dataset.test])
    flat = train.patches.reshape(-1, train.patches.shape[-1])
    proj = projection_matrix(flat.shape[1], params["projection_dim"], cfg.seed)
    projected = flat if proj is None else flat @ proj.numpy()
    rows = []
    for ratio in ratios:
        for name in variants:
            chunk, first = VARIANTS[name](params["chunk_size"], params["first_round_ratio"])
            start = time.perf_counter()
            coreset = TwoRoundCoreset(ratio, None, chunk, first, params["projection_dim"], cfg.seed)
            coreset.add(flat)
            idx = coreset.finish()
            seconds = time.perf_counter() - start
            scorer = PatchCore(index="flat", progress=False)
            scorer.set_state({"memory_bank": np.ascontiguousarray(flat[idx])})
            rows.append({
                "category": dataset.name, "ratio": ratio, "variant": name, "bank": len(idx),
                "patches": len(flat), "seconds": round(seconds, 2),
                "radius": round(covering_radius(projected, projected[idx]), 4),
                "image_auroc": round(float(auroc(labels, scorer.score(test).image_scores)), 4),
            })
            if progress:
                print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    return (f"{row['category']}  ratio {row['ratio']:<5}  {row['variant']:<9}  bank {row['bank']:>7}"
            f"  {row['seconds']:>8.1f} s  radius {row['radius']:.3f}  image AUROC {row['image_auroc']:.4f}")
