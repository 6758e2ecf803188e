"""Streaming feature extraction: images on disk -> patch grids and pooled embeddings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.image_io import ImageReadError
from ..data.loader import Batch, iter_batches
from ..data.transforms import Box, TransformConfig
from ..progress import Progress
from ..resources import StageTimes
from .backbone import Backbone
from .patch_embed import PatchEmbedding

log = logging.getLogger(__name__)


@dataclass
class Features:
    """Features of a set of images, as scorers consume them.

    ``patches``: (N, h, w, D) float32 patch embeddings, for memory-bank scorers.
    ``pooled``: (N, D) float32 global embedding, for image-level scorers.
    ``valid``: (N, h, w) bool, the patches that lie on the image rather than on
    the padding of an aspect-preserving resize; None when all do.
    """

    patches: np.ndarray | None = None
    pooled: np.ndarray | None = None
    valid: np.ndarray | None = None

    def __len__(self) -> int:
        arr = self.patches if self.patches is not None else self.pooled
        return 0 if arr is None else len(arr)

    def subset(self, idx: np.ndarray | Sequence[int]) -> Features:
        idx = np.asarray(idx)
        return Features(
            None if self.patches is None else self.patches[idx],
            None if self.pooled is None else self.pooled[idx],
            None if self.valid is None else self.valid[idx],
        )

    def valid_mask(self) -> np.ndarray:
        """(N, h, w) bool: ``valid``, or all True."""
        if self.valid is not None:
            return self.valid
        return np.ones(self.patches.shape[:3], dtype=bool)

    @staticmethod
    def collect(parts: Iterable[Features], n: int) -> Features:
        """Features arriving part by part, written into arrays allocated once for ``n`` rows
        (the peak is one copy of the features, not a list plus its concatenation)."""
        out: dict[str, np.ndarray] = {}
        start = 0
        # ``valid`` is kept only once a part has padding; earlier parts were all valid.
        for part in parts:
            m = len(part)
            for name in ("patches", "pooled", "valid"):
                arr = getattr(part, name)
                if arr is None:
                    continue
                if name not in out:
                    fill = np.ones if name == "valid" else np.empty
                    out[name] = fill((n, *arr.shape[1:]), dtype=arr.dtype)
                out[name][start:start + m] = arr
            start += m
        if start != n:
            raise ValueError(f"expected features of {n} images, got {start}")
        return Features(out.get("patches"), out.get("pooled"), out.get("valid"))

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        def cat(arrs):
            arrs = [a for a in arrs if a is not None]
            return np.concatenate(arrs) if arrs else None

        valid = None
        if any(p.valid is not None for p in parts):
            valid = np.concatenate([p.valid_mask() for p in parts if p.patches is not None])
        return Features(cat([p.patches for p in parts]), cat([p.pooled for p in parts]), valid)


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


class FeatureExtractor:
    """Runs a frozen :class:`Backbone` over image files in batches.

    ``patches`` / ``pooled`` choose which outputs to compute: patch features
    need only the stages up to ``layers`` (early exit); the pooled embedding
    needs the full network.
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
    ):
        self.backbone = backbone
        self.transform: TransformConfig = backbone.transform_config(image_size, crop_size, resize)
        self.batch_size = batch_size
        self.embedding = embedding or PatchEmbedding()
        self.want_patches = patches
        self.want_pooled = pooled

    def features_of(self, images: torch.Tensor, boxes: Sequence[Box] | None = None,
                    times: StageTimes | None = None) -> Features:
        """Features of a normalised (B, 3, H, W) tensor; ``boxes`` (where each image's content
        lies, from the transform) mark the patches on padding as not ``valid``. ``times``
        accumulates the seconds spent in ``backbone`` and ``embed``."""
        times = times or StageTimes()
        with times("backbone"):
            if self.want_pooled:
                maps, pooled = self.backbone.forward_with_pooled(images)
                pooled_np = pooled.float().numpy()
            else:
                maps, pooled_np = self.backbone(images), None
        with times("embed"):
            patches = None
            if self.want_patches:
                with torch.inference_mode():
                    emb = self.embedding(maps)
                patches = patch_array(emb)
            valid = None
            if patches is not None and boxes is not None:
                valid = valid_grid(boxes, images.shape[-1], patches.shape[1:3])
        return Features(patches, pooled_np, valid)

    def iter_extract(
        self,
        paths: Sequence[Path],
        mask_paths: Sequence[Path | None] | None = None,
        progress: Progress | None = None,
        times: StageTimes | None = None,
    ) -> Iterator[ExtractedBatch]:
        """Yield features batch by batch (bounded memory); errors are in ``batch.errors``.
        ``times`` accumulates ``decode`` (waiting for decoded batches), ``backbone``, ``embed``."""
        times = times or StageTimes()
        batches = iter_batches(paths, self.transform, self.batch_size, mask_paths)
        while True:
            with times("decode"):
                batch = next(batches, None)
            if batch is None:
                return
            feats = (
                self.features_of(torch.from_numpy(batch.images), batch.boxes, times)
                if len(batch.indices) else Features()
            )
            if progress is not None:
                progress.update(len(batch.indices) + len(batch.errors))
            yield ExtractedBatch(batch, feats)

    def iter_features(self, paths: Sequence[Path], progress: Progress | None = None,
                      times: StageTimes | None = None) -> Iterator[Features]:
        """Features of every path, batch by batch, in order; raises on the first unreadable image."""
        for item in self.iter_extract(paths, progress=progress, times=times):
            if item.batch.errors:
                index, reason = item.batch.errors[0]
                raise ImageReadError(paths[index], reason)
            yield item.features

    def extract(self, paths: Sequence[Path], progress: Progress | None = None,
                times: StageTimes | None = None) -> Features:
        """Features of every path, in order, in arrays allocated once; raises on the first
        unreadable image."""
        return Features.collect(self.iter_features(paths, progress, times), len(paths))
