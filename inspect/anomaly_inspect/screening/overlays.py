"""Heatmap overlays and thumbnails written with OpenCV.

Anomaly maps come from :func:`scorers.maps.anomaly_map` (patch scores upsampled
and blurred). Colours are scaled against the model's threshold so that the
same colour means the same thing on every image: blue well below the
threshold, red at twice the threshold and above.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..scorers.maps import anomaly_map


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so that the longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def heatmap_overlay(
    image_rgb: np.ndarray, patch_scores: np.ndarray, vmin: float, vmax: float,
    alpha: float = 0.45, max_side: int = 768,
) -> np.ndarray:
    """RGB uint8 overlay of the anomaly map (scaled to [vmin, vmax]) on ``image_rgb``."""
    image = fit_within(image_rgb, max_side)
    amap = anomaly_map(patch_scores, image.shape[:2])
    span = max(vmax - vmin, 1e-12)
    norm = np.clip((amap - vmin) / span, 0.0, 1.0)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def denormalise(chw: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Model input (3, H, W) float32 back to (H, W, 3) RGB uint8 (for cheap thumbnails)."""
    img = chw.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def write_rgb(path: Path, image_rgb: np.ndarray, quality: int = 85) -> None:
    """Write an RGB image (JPEG or PNG by suffix); raises OSError naming the path on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    path.write_bytes(buf.tobytes())
