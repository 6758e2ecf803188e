"""Anomaly maps: patch scores upsampled to the input size and blurred (PatchCore, sigma = 4)."""

from __future__ import annotations

import cv2
import numpy as np


def pad_cells(cells: np.ndarray, top: int, left: int, grid: tuple[int, int]) -> np.ndarray:
    """The (h, w) ``grid`` of scores from those of its cells that lie on the image (``cells``, the
    block at ``top``, ``left``): a padding cell takes the nearest image cell's score (edge
    padding), so that the blur near the image's border sees only the image's scores. Maps
    (evaluate) and overlays (screening) both fill padding this way."""
    pad = ((top, grid[0] - top - cells.shape[0]), (left, grid[1] - left - cells.shape[1]))
    return np.pad(cells, pad, mode="edge")


def fill_padding(patch_scores: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(N, h, w) patch scores with each image's padding cells (outside ``valid``, its content
    in pad mode) taking the nearest content cell's score (:func:`pad_cells`): every scorer's
    maps, as the overlays, blur only the image's scores into its border. ``valid`` None: as is."""
    if valid is None:
        return patch_scores
    out = np.array(patch_scores, copy=True)
    for j, v in enumerate(valid):
        rows, cols = np.flatnonzero(v.any(1)), np.flatnonzero(v.any(0))
        cells = out[j, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        out[j] = pad_cells(cells, rows[0], cols[0], out.shape[1:])
    return out


def anomaly_map(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(h, w) patch scores -> (H, W) float32 map; ``size`` is (H, W). The cells are spread
    evenly over the input, the geometry every cell box (``transforms.cell_centres``, the
    explanation boxes) uses; where the stride does not divide the input (100 px at stride 8:
    13 cells) the backbone's last cell reaches past it, which no part of the toolkit models."""
    up = cv2.resize(patch_scores.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        k = 2 * int(round(4 * sigma)) + 1
        up = cv2.GaussianBlur(up, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return up


def anomaly_maps(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(N, h, w) -> (N, H, W)."""
    return np.stack([anomaly_map(p, size, sigma) for p in patch_scores]) if len(patch_scores) else \
        np.zeros((0, *size), np.float32)
