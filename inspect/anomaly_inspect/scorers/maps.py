"""Anomaly maps: patch scores upsampled to the input size and blurred (PatchCore, sigma = 4)."""

from __future__ import annotations

import cv2
import numpy as np


def anomaly_map(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(h, w) patch scores -> (H, W) float32 map; ``size`` is (H, W)."""
    up = cv2.resize(patch_scores.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        k = 2 * int(round(4 * sigma)) + 1
        up = cv2.GaussianBlur(up, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return up


def anomaly_maps(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(N, h, w) -> (N, H, W)."""
    return np.stack([anomaly_map(p, size, sigma) for p in patch_scores]) if len(patch_scores) else \
        np.zeros((0, *size), np.float32)
