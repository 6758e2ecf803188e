"""Anomaly maps: patch scores upsampled to the input size and blurred (PatchCore, sigma = 4)."""

from __future__ import annotations

import math

import cv2
import numpy as np


def grid_stride(size: int, cells: int) -> int | None:
    """Pixels per patch cell along one side of a ``size``-pixel input with ``cells`` cells.

    A backbone of stride s gives ceil(size / s) cells, so where s does not divide the input the
    last cell reaches past it (100 px at stride 8: 13 cells over 104 px). The stride is
    size / cells where that is whole, else the power of two that gives ``cells`` cells (CNN
    strides are), else None (the cells are then stretched over the input)."""
    if size % cells == 0:
        return size // cells
    stride = 2 ** max(0, math.ceil(math.log2(size / cells)))
    return stride if math.ceil(size / stride) == cells else None


def pad_cells(cells: np.ndarray, top: int, left: int, grid: tuple[int, int]) -> np.ndarray:
    """The (h, w) ``grid`` of scores from those of its cells that lie on the image (``cells``, the
    block at ``top``, ``left``): a padding cell takes the nearest image cell's score (edge
    padding), so that the blur near the image's border sees only the image's scores. Maps
    (evaluate) and overlays (screening) both fill padding this way."""
    pad = ((top, grid[0] - top - cells.shape[0]), (left, grid[1] - left - cells.shape[1]))
    return np.pad(cells, pad, mode="edge")


def anomaly_map(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(h, w) patch scores -> (H, W) float32 map; ``size`` is (H, W). Each cell covers its
    stride's pixels from the top left (:func:`grid_stride`); the part of the last cells past
    the input is cropped off."""
    h, w = patch_scores.shape
    sy, sx = grid_stride(size[0], h), grid_stride(size[1], w)
    covered = (h * sy if sy else size[0], w * sx if sx else size[1])
    up = cv2.resize(patch_scores.astype(np.float32), (covered[1], covered[0]),
                    interpolation=cv2.INTER_LINEAR)
    if covered != tuple(size):
        up = np.ascontiguousarray(up[:size[0], :size[1]])
    if sigma > 0:
        k = 2 * int(round(4 * sigma)) + 1
        up = cv2.GaussianBlur(up, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return up


def anomaly_maps(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(N, h, w) -> (N, H, W)."""
    return np.stack([anomaly_map(p, size, sigma) for p in patch_scores]) if len(patch_scores) else \
        np.zeros((0, *size), np.float32)
