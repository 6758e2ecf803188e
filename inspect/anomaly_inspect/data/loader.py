"""Batched, prefetched image loading that reports per-image errors instead of dying."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .image_io import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    read_image,
    read_mask,
    reduction_factor,
)
from .transforms import Box, TransformConfig, build_transform


@dataclass
class Batch:
    """Images that decoded (stacked) and the ones that did not (with the reason)."""

    indices: list[int]
    images: np.ndarray  # (B, 3, H, W) float32, normalised
    masks: np.ndarray | None  # (B, H, W) uint8 or None
    originals: list[tuple[int, int]]  # (height, width) as decoded: upright, maybe DCT-reduced
    errors: list[tuple[int, str]]  # (index, reason)
    boxes: list[Box]  # where each image's content lies in the model input


def reduced_side(image_size: int) -> int:
    """The shortest side a very large JPEG keeps where the loader decodes it at a reduced size
    for images resized to ``image_size`` pixels (``read_image``'s ``min_side``): the resize's
    side, not a centre crop's, which would leave a crop under half of it upsampled."""
    return 2 * image_size


def decode_factor(path: Path | str, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """1, 2, 4 or 8: the factor by which the loader reduces ``path``'s decode for images
    resized to ``image_size`` pixels (:func:`reduction_factor`)."""
    return reduction_factor(path, reduced_side(image_size), max_pixels)


def _load_one(path: Path, mask_path: Path | None, transform, want_mask: bool, cfg: TransformConfig):
    # a huge JPEG is decoded at a reduced size, with or without a mask (training and test
    # images go through one decode); the transform resizes its mask to the decoded image
    image = read_image(path, cfg.max_pixels, reduced_side(cfg.image_size))
    mask = None
    if want_mask:
        mask = (read_mask(mask_path, cfg.max_pixels) if mask_path is not None
                else np.zeros(image.shape[:2], np.uint8))
    chw, mask, box = transform(image, mask)
    return chw, mask, image.shape[:2], box


class BatchStream:
    """Batches of ``paths`` in order, each decoded one ahead of the consumer in a worker thread.

    With ``eager`` (the default) the next batch starts decoding as soon as one is handed out.
    A consumer that runs a multi-threaded stage first (the backbone) passes ``eager=False``
    and calls :meth:`prefetch` after it, so that decoding overlaps its single-threaded work
    instead of competing with the backbone's threads for the cores.
    """

    def __init__(self, paths: Sequence[Path], cfg: TransformConfig, batch_size: int = 32,
                 mask_paths: Sequence[Path | None] | None = None, prefetch: bool = True,
                 eager: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch size must be a positive number of images, got {batch_size}")
        self._load = _batch_loader(paths, cfg, batch_size, mask_paths)
        self._starts = list(range(0, len(paths), batch_size))
        self._next = 0  # the next batch to hand out
        self.eager = eager
        self._pool = ThreadPoolExecutor(max_workers=1) if prefetch and len(self._starts) > 1 else None
        self._future: Future[Batch] | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self._next >= len(self._starts):
            self.close()
            raise StopIteration
        self.prefetch()
        start = self._starts[self._next]
        batch = self._future.result() if self._future is not None else self._load(start)
        self._future = None
        self._next += 1
        if self.eager:
            self.prefetch()
        return batch

    def prefetch(self) -> None:
        """Start decoding the next batch (if there is one and it has not started)."""
        if self._pool is not None and self._future is None and self._next < len(self._starts):
            self._future = self._pool.submit(self._load, self._starts[self._next])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._future = None

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_batches(
    paths: Sequence[Path],
    cfg: TransformConfig,
    batch_size: int = 32,
    mask_paths: Sequence[Path | None] | None = None,
    prefetch: bool = True,
) -> Iterator[Batch]:
    """Yield batches in order; decoding of the next batch overlaps the caller's work.

    Masks are produced for every image when ``mask_paths`` is given (all-zero
    where the entry is ``None``).
    """
    with BatchStream(paths, cfg, batch_size, mask_paths, prefetch) as stream:
        yield from stream


def _batch_loader(paths: Sequence[Path], cfg: TransformConfig, batch_size: int,
                  mask_paths: Sequence[Path | None] | None):
    """A function decoding the batch of ``paths`` that starts at a given index."""
    transform = build_transform(cfg)
    want_mask = mask_paths is not None

    def load(start: int) -> Batch:
        idx, imgs, masks, sizes, boxes, errors = [], [], [], [], [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                chw, mask, hw, box = _load_one(paths[i], mask_paths[i] if want_mask else None,
                                          transform, want_mask, cfg)
            except ImageReadError as exc:  # the image's or its mask's
                errors.append((i, exc.reason if exc.path == Path(paths[i])
                               else f"its mask {exc.path}: {exc.reason}"))
                continue
            except Exception as exc:  # any decoder/transform failure is per-image
                errors.append((i, f"{type(exc).__name__}: {exc}"))
                continue
            idx.append(i)
            imgs.append(chw)
            masks.append(mask)
            sizes.append(hw)
            boxes.append(box)
        size = cfg.output_size
        images = np.stack(imgs) if imgs else np.zeros((0, 3, size, size), np.float32)
        mask_arr = (np.stack(masks) if masks else np.zeros((0, size, size), np.uint8)) if want_mask else None
        return Batch(idx, images, mask_arr, sizes, errors, boxes)

    return load
