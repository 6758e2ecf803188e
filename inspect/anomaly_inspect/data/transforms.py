"""Image transforms: resize (stretch, or keep the aspect ratio and pad), optional centre crop,
the backbone's normalisation (albumentations).

``resize="stretch"`` (the default) squashes every image to a square;
``resize="pad"`` scales the longer side to ``image_size`` and
fills the rest of the square by mirroring the image (OpenCV ``BORDER_REFLECT_101``),
so that parts keep their shape whatever the aspect ratio of the files; where
the content lies in the model input is returned as a :class:`Box`, which the
scorers use to ignore the padding. For square images both modes are the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..choices import RESIZE_MODES
from .image_io import DEFAULT_MAX_PIXELS

# The library never reaches the network: albumentations checks PyPI for a newer version when
# imported unless this is set (a value the caller set is kept). This is its only import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402


def cell_centres(input_size: int, cells: int) -> np.ndarray:
    """Pixel coordinates of the centres of ``cells`` equal cells across ``input_size`` pixels."""
    return (np.arange(cells) + 0.5) * (input_size / cells)


@dataclass(frozen=True)
class Box:
    """Where an image's content lies in the (square) model input, in pixels."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def on_grid(self, input_size: int, grid: tuple[int, int]) -> Box:
        """The cells of an (h, w) patch grid over the input whose centres lie in the box
        (at least one cell, the one nearest the box centre, for boxes narrower than a cell)."""
        def span(start: int, length: int, cells: int) -> tuple[int, int]:
            centres = cell_centres(input_size, cells)
            inside = np.nonzero((centres >= start) & (centres < start + length))[0]
            if len(inside) == 0:
                c = int(np.clip((start + length / 2) // (input_size / cells), 0, cells - 1))
                return c, 1
            return int(inside[0]), int(len(inside))

        top, height = span(self.top, self.height, grid[0])
        left, width = span(self.left, self.width, grid[1])
        return Box(top, left, height, width)


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
    resize: str = "stretch"
    #: images above this many pixels are refused before decoding (see ``data.image_io``)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels, got {self.max_pixels}")

    @property
    def output_size(self) -> int:
        return self.crop_size or self.image_size

    @property
    def crop_offset(self) -> int:
        """Where the centre crop starts in the resized image (0 without a crop)."""
        return (self.image_size - self.output_size) // 2

    def resized_box(self, height: int, width: int) -> Box:
        """Where an image of ``height`` x ``width`` pixels lies after resizing (before the crop)."""
        s = self.image_size
        if self.resize == "stretch":
            return Box(0, 0, s, s)
        scale = s / max(height, width)
        h = min(s, max(1, round(height * scale)))
        w = min(s, max(1, round(width * scale)))
        return Box((s - h) // 2, (s - w) // 2, h, w)

    def content_box(self, height: int, width: int) -> Box:
        """Where an image of ``height`` x ``width`` pixels ends up in the model input."""
        return self.cropped(self.resized_box(height, width))

    def input_to_image(self, height: int, width: int, top: float, left: float, bottom: float,
                       right: float) -> Box:
        """A rectangle of the model input (pixels, after the optional crop) in the pixels of
        the ``height`` x ``width`` image it came from (stretch or pad undone), clipped to it.
        Both edges are rounded alike (half up), so rectangles that touch in the model input
        touch in the image too: no shared pixel, no gap."""
        off = self.crop_offset
        rb = self.resized_box(height, width)
        sy, sx = height / rb.height, width / rb.width

        def edge(v: float, scale: float) -> float:
            return np.floor(v * scale + 0.5)

        y0 = int(np.clip(edge(top + off - rb.top, sy), 0, height - 1))
        x0 = int(np.clip(edge(left + off - rb.left, sx), 0, width - 1))
        y1 = int(np.clip(edge(bottom + off - rb.top, sy), y0 + 1, height))
        x1 = int(np.clip(edge(right + off - rb.left, sx), x0 + 1, width))
        return Box(y0, x0, y1 - y0, x1 - x0)

    def cropped(self, box: Box) -> Box:
        """A :meth:`resized_box` after the optional centre crop."""
        if not self.crop_size:
            return box
        off = self.crop_offset
        top, left = max(box.top - off, 0), max(box.left - off, 0)
        bottom = min(box.top + box.height - off, self.crop_size)
        right = min(box.left + box.width - off, self.crop_size)
        return Box(top, left, max(bottom - top, 1), max(right - left, 1))


class ImageTransform:
    """``(image, mask) -> ((3, H, W) float32, (H, W) mask or None, content Box)``."""

    def __init__(self, cfg: TransformConfig):
        self.cfg = cfg
        steps: list = []
        if cfg.resize == "stretch":
            steps.append(A.Resize(cfg.image_size, cfg.image_size, interpolation=cv2.INTER_LINEAR))
        if cfg.crop_size:
            steps.append(A.CenterCrop(cfg.crop_size, cfg.crop_size))
        steps.append(A.Normalize(mean=cfg.mean, std=cfg.std, max_pixel_value=255.0))
        self.compose = A.Compose(steps)

    def _border(self, box: Box) -> tuple[int, int, int, int]:
        """The (top, bottom, left, right) padding around ``box`` in the square input."""
        s = self.cfg.image_size
        return box.top, s - box.top - box.height, box.left, s - box.left - box.width

    def _pad(self, image: np.ndarray, mask: np.ndarray | None, box: Box):
        image = cv2.resize(image, (box.width, box.height), interpolation=cv2.INTER_LINEAR)
        image = cv2.copyMakeBorder(image, *self._border(box), cv2.BORDER_REFLECT_101)
        return image, None if mask is None else self._pad_mask(mask, box)

    def _pad_mask(self, mask: np.ndarray, box: Box) -> np.ndarray:
        mask = cv2.resize(mask, (box.width, box.height), interpolation=cv2.INTER_NEAREST)
        return cv2.copyMakeBorder(mask, *self._border(box), cv2.BORDER_CONSTANT, value=0)

    def uncropped_mask(self, mask: np.ndarray, height: int, width: int) -> np.ndarray:
        """The (image_size, image_size) mask of a ``height`` x ``width`` image as
        :meth:`__call__` places it before the centre crop (the mask it returns is this one's
        crop): evaluate's pixel AUROC covers the pixels the crop leaves out too."""
        if mask.shape[:2] != (height, width):
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        if self.cfg.resize == "pad":
            return self._pad_mask(mask, self.cfg.resized_box(height, width))
        s = self.cfg.image_size  # albumentations' Resize takes masks by nearest neighbour
        return cv2.resize(mask, (s, s), interpolation=cv2.INTER_NEAREST)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None):
        if mask is not None and mask.shape[:2] != image.shape[:2]:
            mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        resized = self.cfg.resized_box(*image.shape[:2])
        if self.cfg.resize == "pad":
            image, mask = self._pad(image, mask, resized)
        out = self.compose(image=image, mask=mask) if mask is not None else self.compose(image=image)
        chw = np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32)
        return chw, (out["mask"] if mask is not None else None), self.cfg.cropped(resized)


def build_transform(cfg: TransformConfig) -> ImageTransform:
    return ImageTransform(cfg)
