"""Backbone stage maps of an image list, extracted once and kept on disk (float32 memmaps).

Why: ``tune`` ranks many candidates that differ only in which stages they use and how the patch
embedding summarises them. One backbone pass per backbone x input size x resize (with the union
of the candidates' stages) feeds all of them; the embedding of each candidate is derived from the
cached maps, batch by batch, so memory stays bounded.

Cache entries (these maps, tune's synthetic sets) are built in a temporary folder beside the
entry and renamed into place when complete (:func:`new_entry`): a run never writes into an
entry that another run reads, and an entry that is there is complete. The temporary folder is
locked while it is built, so the next run that builds an entry in the same cache folder removes
those a ``kill -9`` left there (of any entry).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..core import Features
from ..data.image_io import DEFAULT_MAX_PIXELS, ImageReadError
from ..data.layout import display_path
from ..data.transforms import Box
from ..features.backbone import Backbone
from ..features.cache import code_fingerprint, file_fingerprints, precision_key
from ..features.extractor import FeatureExtractor, patch_array, raise_first_error, valid_grid
from ..features.patch_embed import PatchEmbedding
from ..files import cached_entry, write_json
from ..progress import Progress

log = logging.getLogger(__name__)

#: how to point tune at another cache folder, where this one cannot be written
TUNE_CACHE_ELSEWHERE = "choose a writable folder with --tune-cache or $ANOMALY_INSPECT_CACHE"


class StageMaps:
    """The cached maps of one image list: ``maps[stride]`` is an (N, C, h, w) float32 memmap,
    ``boxes`` (N, 4) where each image's content lies in the ``input_size`` model input;
    ``skipped`` (index, reason) of the unreadable images, ``rows`` the others (image ``i`` of
    :meth:`features` is row ``rows[i]``). Raises ``ValueError`` / ``OSError`` on a broken entry."""

    def __init__(self, directory: Path, strides: Sequence[int], input_size: int):
        self.directory = Path(directory)
        self.input_size = input_size
        done = json.loads((self.directory / "done").read_text())
        if not isinstance(done, dict):
            raise ValueError(f"done: expected a JSON object, got {type(done).__name__}")
        self.boxes = np.load(self.directory / "boxes.npy")
        self.maps = {s: np.load(self.directory / f"stride{s}.npy", mmap_mode="r") for s in strides}
        n = done.get("n", len(self.boxes))
        if not _is_index(n):
            raise ValueError(f"done: n={n!r} is not a number of images")
        for name, arr in [("boxes", self.boxes), *((f"stride{s}", m) for s, m in self.maps.items())]:
            if len(arr) != n:
                raise ValueError(f"{name}.npy holds {len(arr)} images, expected {n}")
        skipped = done.get("skipped", [])
        if not isinstance(skipped, list) or not all(
                isinstance(s, list) and len(s) == 2 and _is_index(s[0]) and s[0] < n
                and isinstance(s[1], str) for s in skipped):
            raise ValueError(f"done: skipped={str(skipped)[:80]} is not a list of "
                             f"[image index, reason]")
        self.skipped = [(i, reason) for i, reason in skipped]
        self.rows = np.setdiff1d(np.arange(n), [i for i, _ in self.skipped])

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, idx: Sequence[int], strides: Sequence[int], embedding: PatchEmbedding) -> Features:
        """Patch features of images ``idx`` for the stages ``strides`` (as the extractor computes
        them from the same maps), with ``valid`` marking patches on the padding."""
        rows = self.rows[np.asarray(idx)]
        maps = [torch.from_numpy(np.ascontiguousarray(self.maps[s][rows])) for s in strides]
        with torch.inference_mode():
            patches = patch_array(embedding(maps))
        boxes = [Box(*map(int, b)) for b in self.boxes[rows]]
        return Features(patches, None, valid_grid(boxes, self.input_size, patches.shape[1:3]))

    def iter_features(self, idx: Sequence[int], strides: Sequence[int], embedding: PatchEmbedding,
                      batch_size: int = 32) -> Iterator[Features]:
        idx = np.asarray(idx)
        for start in range(0, len(idx), batch_size):
            yield self.features(idx[start:start + batch_size], strides, embedding)


def _is_index(value) -> bool:
    """``value`` is a whole number >= 0 (not a bool, which JSON's true would give)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def calibrate(backbone: Backbone, train_paths: Sequence[Path], image_size: int, resize: str,
              crop_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Calibrate an int8 ``backbone`` on ``train_paths`` (training images, never test images)
    at the input geometry :func:`stage_maps` extracts with; a no-op at other precisions."""
    if backbone.needs_calibration:
        FeatureExtractor(backbone, image_size, crop_size, patches=False, resize=resize,
                         max_pixels=max_pixels).calibrate(list(train_paths))


def stage_maps(backbone: Backbone, paths: Sequence[Path], image_size: int, resize: str,
               cache_dir: Path, batch_size: int = 32, progress: bool = True,
               desc: str = "extract", max_pixels: int = DEFAULT_MAX_PIXELS,
               crop_size: int | None = None, skip_unreadable: bool = False) -> StageMaps:
    """The stage maps of ``paths`` through ``backbone`` (all of its ``layers``), read from
    ``cache_dir`` when an extraction with the same backbone, weights, precision (at int8 the
    calibration images, see :func:`calibrate`), geometry, files (path, size, mtime), pixel
    budget and package code (:func:`~..features.cache.code_fingerprint`) is there, else
    extracted now. Raises on the first unreadable image, or with
    ``skip_unreadable`` leaves it out with a warning naming it. (``skip_unreadable`` is no part
    of the key: an entry holds unreadable images only when extracted with it, and one read
    without it raises at the first of them, as the extraction would.)"""
    strides = backbone.strides
    key = hashlib.sha256(json.dumps({
        "backbone": backbone.name, "weights": backbone.weight_source.checksum,
        "layers": list(backbone.layers), "size": image_size, "resize": resize,
        "mean": backbone.mean, "std": backbone.std, "files": file_fingerprints(paths),
        **({"crop": crop_size} if crop_size else {}),
        # the budget decides which images are refused as too large: another budget, another
        # entry (nothing at the default: the key stays that of the default budget)
        **({"max_pixels": max_pixels} if max_pixels != DEFAULT_MAX_PIXELS else {}),
        **precision_key(backbone),  # nothing at f32: one key on every runtime
        # decoding, transforms, the extractor and this module: an upgrade extracts again
        "code": code_fingerprint(include=("tuning/stage_cache.py",)),
    }).encode()).hexdigest()[:16]
    directory = Path(cache_dir) / f"{backbone.name}-{image_size}-{resize}-{key}"
    input_size = crop_size or image_size

    def extract(tmp: Path) -> None:
        _extract(backbone, paths, image_size, resize, tmp, batch_size, progress, desc,
                 max_pixels, crop_size, skip_unreadable)
        backbone.release()

    maps = cached_entry(directory, lambda d: _complete(d, strides, input_size), extract,
                        "the stage-map cache entry", TUNE_CACHE_ELSEWHERE)
    if maps.skipped and not skip_unreadable:
        index, reason = maps.skipped[0]
        raise ImageReadError(paths[index], reason)
    for index, reason in maps.skipped:
        log.warning("skipping %s: %s", display_path(paths[index]), reason)
    return maps


def _complete(directory: Path, strides: Sequence[int], input_size: int) -> StageMaps | None:
    """The complete entry ``directory``, or None (absent, unfinished, or broken: said)."""
    if not (directory / "done").is_file():
        return None
    try:
        return StageMaps(directory, strides, input_size)
    except (OSError, ValueError, EOFError) as e:
        log.warning("%s: broken stage-map cache entry (%s); extracting again", directory, e)
        return None


def _memmap(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A new float32 ``.npy`` memmap whose disk space is reserved now: writing a sparse memmap
    on a full disk kills the process (SIGBUS) instead of raising."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    return arr


def _extract(backbone: Backbone, paths: Sequence[Path], image_size: int, resize: str, out: Path,
             batch_size: int, progress: bool, desc: str, max_pixels: int, crop_size: int | None,
             skip_unreadable: bool) -> None:
    """Write the entry's files (maps, boxes, then ``done``) into the folder ``out``."""
    strides = backbone.strides
    extractor = FeatureExtractor(backbone, image_size, crop_size, batch_size, patches=False,
                                 resize=resize, maps=True, max_pixels=max_pixels)
    arrays: dict[int, np.ndarray] = {}
    boxes = np.zeros((len(paths), 4), np.int64)
    skipped: list[tuple[int, str]] = []
    with Progress(len(paths), desc, enabled=progress) as bar:
        for item in extractor.iter_extract(paths, progress=bar):
            if not skip_unreadable:
                raise_first_error(item.batch, paths)
            skipped += item.batch.errors
            if not item.batch.indices:
                continue
            idx = np.asarray(item.batch.indices)
            for stride, fmap in zip(strides, item.maps, strict=True):
                if stride not in arrays:
                    arrays[stride] = _memmap(out / f"stride{stride}.npy", (len(paths), *fmap.shape[1:]))
                arrays[stride][idx] = fmap
            for j, box in zip(idx, item.batch.boxes, strict=True):
                boxes[j] = (box.top, box.left, box.height, box.width)
    if not arrays:
        raise ValueError(f"no image could be read of the {len(paths)} to extract"
                         + (f" (first: {display_path(paths[skipped[0][0]])}: {skipped[0][1]})"
                            if skipped else ""))
    for arr in arrays.values():
        arr.flush()
    np.save(out / "boxes.npy", boxes)
    write_json(out / "done", {"n": len(paths), "strides": list(strides), "skipped": skipped},
               indent=None)
