"""Heatmap overlays and thumbnails written with OpenCV.

Anomaly maps come from :func:`scorers.maps.anomaly_map` (patch scores upsampled
and blurred over the model input), mapped back onto the original image through
the resize (stretch or pad) and the centre crop, so that a defect's heat sits on
the defect; the border a crop leaves out gets no heat. Colours use one scale
for every image, so that the same colour means the same thing on each: blue at
the median normal patch score of the calibration images (``map_vmin`` in
``model.json``), red as far above the threshold (``map_vmax``); a model without
that range uses half and one and a half times the threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..scorers.maps import anomaly_map, pad_cells

if TYPE_CHECKING:
    from ..data.transforms import Box, TransformConfig


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so that the longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def heatmap_overlay(
    image_rgb: np.ndarray, patch_scores: np.ndarray, cells: Box, grid: tuple[int, int],
    transform: TransformConfig, vmin: float, vmax: float, alpha: float = 0.45, max_side: int = 768,
) -> np.ndarray:
    """RGB uint8 overlay of the anomaly map (scaled to [vmin, vmax]) on ``image_rgb``: see
    :func:`image_map` for ``patch_scores``, ``cells``, ``grid`` and ``transform``."""
    image = fit_within(image_rgb, max_side)
    amap, covered = image_map(patch_scores, cells, grid, transform, image_rgb.shape[:2],
                              image.shape[:2])
    span = max(vmax - vmin, 1e-12)
    norm = np.clip((amap - vmin) / span, 0.0, 1.0)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
    out[~covered] = image[~covered]
    return out


def image_map(patch_scores: np.ndarray, cells: Box, grid: tuple[int, int],
              transform: TransformConfig, image_size: tuple[int, int],
              shown: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The anomaly map of an image of ``image_size`` (height, width) pixels, shown at
    ``shown`` (height, width), and the mask of its pixels the model input covers.

    ``patch_scores`` are the scores of the ``cells`` of the model input's ``grid`` that lie on
    the image (:class:`~.model.ScoredImage`); they are placed on the grid (padding cells take
    the nearest image cell's score, as in evaluate's maps: :func:`~..scorers.maps.pad_cells`),
    upsampled and blurred over the model input, and each shown pixel takes the value at its
    place in the model input: the inverse of ``transform.input_to_image`` (resize and pad,
    then the centre crop's offset).
    """
    size = transform.output_size
    amap = anomaly_map(pad_cells(patch_scores, cells.top, cells.left, grid), (size, size))
    resized = transform.resized_box(*image_size)
    crop = transform.crop_offset
    sy, sx = resized.height / shown[0], resized.width / shown[1]  # model-input px per shown px
    # pixel centres: y_in + 0.5 = (y + 0.5) * sy + resized.top - crop (and likewise x)
    to_input = np.float32([[sx, 0, 0.5 * sx - 0.5 + resized.left - crop],
                           [0, sy, 0.5 * sy - 0.5 + resized.top - crop]])

    def inside(n: int, extent: int, start: int) -> np.ndarray:
        """Which of ``n`` shown pixels have their centre in [0, size] of the input, edges
        included: (k + 1/2) * extent / n + start - crop, times 2n, in integers (exact ties)."""
        at = (2 * np.arange(n, dtype=np.int64) + 1) * extent + 2 * n * (start - crop)
        return (at >= 0) & (at <= 2 * n * size)

    # per axis, so a corner is covered as its edges are
    covered = np.outer(inside(shown[0], resized.height, resized.top),
                       inside(shown[1], resized.width, resized.left))
    return cv2.warpAffine(amap, to_input, (shown[1], shown[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE), covered


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
