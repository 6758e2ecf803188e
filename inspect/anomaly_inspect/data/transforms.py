"""Image transforms (albumentations): resize, optional centre crop, the backbone's normalisation."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# albumentations otherwise checks PyPI for a newer version on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402


@dataclass(frozen=True)
class TransformConfig:
    """Geometry and normalisation of model inputs.

    ``mean``/``std`` must come from the backbone's own timm ``pretrained_cfg``
    (0.5/0.5 for the EfficientNet-Lite models); ImageNet's values cost about
    0.16 image AUROC on MVTec screw with those weights.
    """

    image_size: int = 256
    crop_size: int | None = None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def output_size(self) -> int:
        return self.crop_size or self.image_size


def build_transform(cfg: TransformConfig) -> A.Compose:
    steps = [A.Resize(cfg.image_size, cfg.image_size, interpolation=1)]  # cv2.INTER_LINEAR
    if cfg.crop_size:
        steps.append(A.CenterCrop(cfg.crop_size, cfg.crop_size))
    steps.append(A.Normalize(mean=cfg.mean, std=cfg.std, max_pixel_value=255.0))
    return A.Compose(steps)


def apply_transform(
    transform: A.Compose, image: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return a (3, H, W) float32 image and the (H, W) mask resized the same way."""
    if mask is not None and mask.shape[:2] != image.shape[:2]:
        import cv2

        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    out = transform(image=image, mask=mask) if mask is not None else transform(image=image)
    chw = np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32)
    return chw, (out["mask"] if mask is not None else None)
