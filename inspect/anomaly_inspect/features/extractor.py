"""Streaming feature extraction: images on disk -> patch grids and pooled embeddings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from ..core import Features
from ..data.image_io import DEFAULT_MAX_PIXELS, ImageReadError
from ..data.loader import Batch, BatchStream, iter_batches
from ..data.transforms import Box, TransformConfig
from ..progress import Progress
from ..resources import StageTimes, release_free_memory
from .backbone import Backbone
from .patch_embed import PatchEmbedding
from .runtime import CALIBRATION_IMAGES
from .views import rotated_views, view_params

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()  # :func:`timed`'s end-of-items marker


def patch_array(emb: torch.Tensor) -> np.ndarray:
    """A (B, D, h, w) patch-embedding tensor as the (B, h, w, D) float32 array scorers take."""
    return np.ascontiguousarray(emb.permute(0, 2, 3, 1).float().numpy())


def valid_grid(boxes: Sequence[Box], input_size: int, grid: tuple[int, int]) -> np.ndarray | None:
    """(B, h, w) bool: the patch cells whose centres lie in each image's content box;
    None when every cell of every image does (no padding)."""
    valid = np.zeros((len(boxes), *grid), dtype=bool)
    for i, box in enumerate(boxes):
        cells = box.on_grid(input_size, grid)
        valid[i][cells.slices()] = True
    return None if valid.all() else valid


@dataclass
class ExtractedBatch:
    batch: Batch
    features: Features
    maps: list[np.ndarray] | None = None  # raw (B, C, h, w) stage maps, with ``maps=True``


class FeatureExtractor:
    """The one feature source: runs a frozen :class:`Backbone` over image files in batches.

    ``patches`` / ``pooled`` / ``blocks`` choose the outputs, all from one pass:
    patch embeddings need only the stages up to ``layers`` (early exit); the
    pooled embedding needs the full network; block norms (per-channel L2 norms of
    each chosen stage and of the final map) need the final map too (the backbone's
    ``full`` graph, run by its runtime like the others). Images above
    ``max_pixels`` are refused unread (see :mod:`..data.image_io`).
    """

    def __init__(
        self,
        backbone: Backbone,
        image_size: int = 256,
        crop_size: int | None = None,
        batch_size: int = 32,
        embedding: PatchEmbedding | None = None,
        patches: bool = True,
        pooled: bool = False,
        resize: str = "stretch",
        blocks: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        maps: bool = False,
        views: str = "none",
    ):
        view_params(views)  # validate early
        self.backbone = backbone
        self.transform: TransformConfig = backbone.transform_config(image_size, crop_size, resize,
                                                                    max_pixels)
        self.batch_size = batch_size
        self.embedding = embedding or PatchEmbedding()
        self.want_patches = patches
        self.want_pooled = pooled
        self.want_blocks = blocks
        self.want_maps = maps
        self.views = views  # with the pooled embedding, its views' too (Features.pooled_views)

    def features_of(self, images: torch.Tensor, boxes: Sequence[Box] | None = None,
                    times: StageTimes | None = None, patches_only: bool = False) -> Features:
        """Features of a normalised (B, 3, H, W) tensor; ``boxes`` (where each image's content
        lies, from the transform) mark the patches on padding as not ``valid``. ``times``
        accumulates the seconds spent in ``backbone`` and ``embed``; ``patches_only`` skips
        the pooled embedding and block norms (e.g. for augmented views)."""
        return self._forward(images, boxes, times, patches_only)[0]

    def _forward(self, images: torch.Tensor, boxes: Sequence[Box] | None, times: StageTimes | None,
                 patches_only: bool = False) -> tuple[Features, list[torch.Tensor]]:
        """:meth:`features_of` and the raw stage maps it was computed from."""
        times = times or StageTimes()
        pooled_np = blocks = None
        with times("backbone"):
            if self.want_blocks and not patches_only:
                maps, final, pooled = self.backbone.forward_full(images)
                pooled_np = pooled.float().numpy() if self.want_pooled else None
                named = [("final", final), *zip(map(str, self.backbone.layers), maps, strict=True)]
                # over every cell, padding (resize "pad") included: the OOD benchmark refuses
                # block rows with pad rather than score the mirrored border
                blocks = {name: fmap.clamp_min(0).pow(2).sum(dim=(2, 3)).sqrt().float().numpy()
                          for name, fmap in named}
            elif self.want_pooled and not patches_only:
                maps, pooled = self.backbone.forward_with_pooled(images)
                pooled_np = pooled.float().numpy()
            else:
                maps = self.backbone(images)
        views_np = None
        if pooled_np is not None and self.views != "none":
            # a view at a time (the batch's memory); making it counts in decode, as TailedCore's
            views = []
            for view in timed(rotated_views(images, self.views), times, "decode"):
                with times("backbone"):
                    views.append(self.backbone.forward_with_pooled(view)[1].float().numpy())
            views_np = np.stack(views, axis=1)
        with times("embed"):
            patches = None
            if self.want_patches or patches_only:
                with torch.inference_mode():
                    emb = self.embedding(maps)
                patches = patch_array(emb)
            valid = None
            if patches is not None and boxes is not None:
                valid = valid_grid(boxes, images.shape[-1], patches.shape[1:3])
        return Features(patches, pooled_np, valid, blocks, views_np), maps

    def calibrate(self, paths: Sequence[Path]) -> None:
        """Calibrate a backbone that needs it (int8) on up to ``CALIBRATION_IMAGES`` of these
        training images, spread evenly over them (unreadable ones left out); a no-op otherwise."""
        if not self.backbone.needs_calibration or not paths:
            return
        picks = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), CALIBRATION_IMAGES)).round())
        chosen = [paths[int(i)] for i in picks]
        batch = next(iter_batches(chosen, self.transform, len(chosen), prefetch=False))
        if not batch.indices:
            raise_first_error(batch, chosen)
        self.backbone.calibrate(batch.images)

    def iter_extract(
        self,
        paths: Sequence[Path],
        mask_paths: Sequence[Path | None] | None = None,
        progress: Progress | None = None,
        times: StageTimes | None = None,
        image_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Iterator[ExtractedBatch]:
        """Yield features batch by batch (bounded memory); errors are in ``batch.errors``.
        ``times`` accumulates ``decode`` (waiting for decoded batches), ``backbone``, ``embed``.
        ``image_fn`` transforms each normalised batch before the backbone (e.g. pseudo-OOD
        jigsaw); its patches are then all marked valid."""
        times = times or StageTimes()
        # the next batch decodes while the caller works on this one (the coreset, the
        # search), not while the backbone's and the embedding's threads need the cores
        with BatchStream(paths, self.transform, self.batch_size, mask_paths, eager=False) as batches:
            while True:
                with times("decode"):
                    batch = next(batches, None)
                if batch is None:
                    return
                feats, maps = Features(), None
                if batch.indices:
                    x = torch.from_numpy(batch.images)
                    if image_fn is None:
                        feats, maps = self._forward(x, batch.boxes, times)
                    else:
                        feats, maps = self._forward(image_fn(x), None, times)
                batches.prefetch()
                if progress is not None:
                    progress.update(len(batch.indices) + len(batch.errors))
                raw = [m.float().numpy() for m in maps] if self.want_maps and maps is not None else None
                yield ExtractedBatch(batch, feats, raw)
                # the caller's per-batch arrays are freed by now; without this, a long stream's
                # RSS creeps up (heap fragmentation) although what it holds is bounded
                release_free_memory()

    def iter_views(self, paths: Sequence[Path], kind: str, progress: Progress | None = None,
                   times: StageTimes | None = None) -> Iterator[Features]:
        """Patch features of the rotated / flipped views (``kind``, see :mod:`.views`) of
        ``paths``, one (batch, view) at a time; patches whose centre falls off the rotated
        image content are not ``valid``. Raises on the first unreadable image. ``times``
        accumulates ``decode`` (waiting for decoded batches and making the views),
        ``backbone`` and ``embed``, as for the training images themselves."""
        from .views import cells_inside, content_masks, rotated_views

        times = times or StageTimes()
        for batch in timed(iter_batches(paths, self.transform, self.batch_size), times, "decode"):
            raise_first_error(batch, paths)
            images = torch.from_numpy(batch.images)
            content = content_masks(batch.boxes, images.shape[-1])
            masks = rotated_views(content, kind) if content is not None else None
            for view in timed(rotated_views(images, kind), times, "decode"):
                feats = self.features_of(view, times=times, patches_only=True)
                if masks is not None:
                    with times("decode"):  # the content mask rotated as its view
                        mask = next(masks)
                    feats.valid = cells_inside(mask, feats.patches.shape[1:3])
                if progress is not None:
                    progress.update(len(view))
                yield feats


def timed(items: Iterator[T], times: StageTimes, stage: str) -> Iterator[T]:
    """``items``, the time spent making each one counted in ``stage`` of ``times``."""
    while True:
        with times(stage):
            item = next(items, _END)
        if item is _END:
            return
        yield item


def raise_first_error(batch: Batch, paths: Sequence[Path]) -> None:
    """Raise :class:`ImageReadError` for the first image of ``batch`` that could not be read."""
    if batch.errors:
        index, reason = batch.errors[0]
        raise ImageReadError(paths[index], reason)
