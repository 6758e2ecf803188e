"""Rotated / flipped views of images: TailedCore's tail-memory augmentation, and the views a
pooled scorer is fitted on and averages over (``features: views``, the extractor's
``pooled_views``).

A tail class has only a few images, so TailedCore adds their rotated and
flipped versions to the memory (methods.md §1.5): for every (angle, flip) in
{0, r, ..., 360 - r} x {none, horizontal} except the identity, the image is
replicate-padded so that no empty corners appear, rotated and centre-cropped
back to its size. :class:`ViewFeatures` turns training-image indices into the
patch features of those views; the evaluation hands it to the scorer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..choices import VIEW_KINDS
from ..core import Features
from ..data.transforms import Box, cell_centres
from ..progress import Progress
from ..resources import StageTimes

if TYPE_CHECKING:
    from .extractor import FeatureExtractor


def view_params(kind: str) -> list[tuple[int, bool]]:
    """(angle, hflip) pairs of a kind, the identity excluded."""
    if kind not in VIEW_KINDS:
        raise ValueError(f"unknown view kind '{kind}'; choose from {', '.join(VIEW_KINDS)}")
    step, flip = VIEW_KINDS[kind]
    if step is None:
        return []
    return [(a, f) for a in range(0, 360, step) for f in ((False, True) if flip else (False,))
            if (a, f) != (0, False)]


def rotated_views(images: torch.Tensor, kind: str = "rot15flip") -> Iterator[torch.Tensor]:
    """Yield each (B, 3, H, W) view of a batch: flip, replicate-pad, rotate, centre-crop."""
    for angle, flip in view_params(kind):
        yield one_view(images, angle, flip)


def one_view(images: torch.Tensor, angle: int, flip: bool) -> torch.Tensor:
    """One (angle, flip) view of a (B, C, H, W) batch, as :func:`rotated_views` makes it
    (also used to show the training patch a memory item came from)."""
    import torchvision.transforms.functional as TF  # torchvision: 1 s of import, here only
    from torchvision.transforms import InterpolationMode

    h, w = images.shape[-2:]
    diag = math.hypot(h, w)
    pad_h, pad_w = math.ceil((diag - h) / 2), math.ceil((diag - w) / 2)
    x = TF.hflip(images) if flip else images
    if angle % 90 == 0 and h == w:  # exact: no interpolation, no padding needed
        x = torch.rot90(x, k=angle // 90, dims=(-2, -1))
    elif angle:
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
        x = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
        x = TF.center_crop(x, [h, w])
    return x


class ViewFeatures:
    """The :class:`~..core.ViewSource` of a set of training images: their views' patch
    features, from the extractor that produced the training features (same backbone,
    input transform and patch embedding)."""

    def __init__(self, extractor: FeatureExtractor, paths: Sequence[Path], kind: str = "rot15flip",
                 progress: bool = True, times: StageTimes | None = None):
        view_params(kind)  # validate early
        self.extractor = extractor
        self.paths = list(paths)
        self.kind = kind
        self.progress = progress
        self.times = times  # where the views' decode / backbone / embed seconds are counted

    @property
    def views_per_image(self) -> int:
        return len(view_params(self.kind))

    def iter_views(self, indices: Sequence[int]) -> Iterator[Features]:
        """Patch features of every view of the images at ``indices``, one (batch, view) at a
        time, so callers can reduce as they go."""
        if not len(indices) or self.views_per_image == 0:
            return
        paths = [self.paths[int(i)] for i in indices]
        with Progress(len(paths) * self.views_per_image, "tail views", enabled=self.progress) as bar:
            yield from self.extractor.iter_views(paths, self.kind, bar, self.times)

    def iter_view_blocks(self, indices: Sequence[int]
                         ) -> Iterator[tuple[np.ndarray, tuple[int, bool], Features]]:
        """As :meth:`iter_views`, each block with the training-image indices of its rows and
        its (angle, flip): what a memory item's provenance records. The extractor yields,
        batch after batch of images, one block per view in :func:`view_params` order."""
        ids = np.asarray([int(i) for i in indices])
        params = view_params(self.kind)
        start = 0
        for k, feats in enumerate(self.iter_views(ids)):
            yield ids[start:start + len(feats)], params[k % len(params)], feats
            if k % len(params) == len(params) - 1:
                start += len(feats)


def content_masks(boxes: Sequence[Box], size: int) -> torch.Tensor | None:
    """(B, 1, size, size) float: 1 on each image's content, 0 on the padding; None without padding."""
    mask = torch.zeros((len(boxes), 1, size, size))
    for i, box in enumerate(boxes):
        rows, cols = box.slices()
        mask[i, 0, rows, cols] = 1.0
    return None if bool(mask.all()) else mask


def cells_inside(mask: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(B, h, w) bool: the grid cells whose centre lies on content in a (rotated) content mask.
    Content that no cell centre meets (thinner than a cell) keeps cells by
    :func:`thin_content_cells`, so that the mask of a content box gives
    :func:`~.extractor.valid_grid`'s cells (:meth:`Box.on_grid`'s rule) in every view."""
    size = mask.shape[-1]
    content = (mask[:, 0] > 0.5).numpy()
    ys, xs = (cell_centres(size, cells).astype(int) for cells in grid)
    valid = content[:, ys][:, :, xs]
    for i in np.nonzero(content.any(axis=(1, 2)) & ~valid.any(axis=(1, 2)))[0]:
        valid[i] = thin_content_cells(content[i], grid, ys, xs)
    return valid


def thin_content_cells(content: np.ndarray, grid: tuple[int, int], ys: np.ndarray,
                       xs: np.ndarray) -> np.ndarray:
    """(h, w) bool: the cells kept for a (size, size) content mask on which no cell centre
    (pixel rows ``ys``, columns ``xs``) lies. As :meth:`Box.on_grid` does for a box, an axis
    along which no centre meets the content keeps one cell, the one holding the middle of the
    content's extent, sampled at that middle; where the content still meets no sample (a thin
    oblique strip), the cell holding the middle of the extent is kept."""
    size = content.shape[-1]
    rows, cols = np.nonzero(content.any(axis=1))[0], np.nonzero(content.any(axis=0))[0]
    extent = Box(int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
    middle = Box(extent.top + extent.height // 2, extent.left + extent.width // 2, 1, 1)
    cells = extent.on_grid(size, grid)  # one cell, the middle one, along an axis no centre meets
    row_cells, col_cells = np.arange(grid[0]), np.arange(grid[1])
    if not content[ys].any():
        row_cells, ys = np.array([cells.top]), np.array([middle.top])
    if not content[:, xs].any():
        col_cells, xs = np.array([cells.left]), np.array([middle.left])
    valid = np.zeros(grid, dtype=bool)
    valid[np.ix_(row_cells, col_cells)] = content[np.ix_(ys, xs)]
    if not valid.any():
        valid[middle.on_grid(size, grid).slices()] = True
    return valid
