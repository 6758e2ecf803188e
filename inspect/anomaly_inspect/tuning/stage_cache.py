"""Backbone stage maps of an image list, extracted once and kept on disk (float32 memmaps).

Why: ``tune`` ranks many candidates that differ only in which stages they use and how the patch
embedding summarises them. One backbone pass per backbone x input size x resize (with the union
of the candidates' stages) feeds all of them; the embedding of each candidate is derived from the
cached maps, batch by batch, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..core import Features
from ..data.image_io import DEFAULT_MAX_PIXELS
from ..data.transforms import Box
from ..features.backbone import Backbone
from ..features.extractor import FeatureExtractor, patch_array, raise_first_error, valid_grid
from ..features.patch_embed import PatchEmbedding
from ..files import write_json
from ..progress import Progress


def _fingerprint(paths: Sequence[Path]) -> list:
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


class StageMaps:
    """The cached maps of one image list: ``maps[stride]`` is an (N, C, h, w) float32 memmap,
    ``boxes`` (N, 4) where each image's content lies in the model input."""

    def __init__(self, directory: Path, strides: Sequence[int], image_size: int):
        self.directory = Path(directory)
        self.image_size = image_size
        self.maps = {s: np.load(self.directory / f"stride{s}.npy", mmap_mode="r") for s in strides}
        self.boxes = np.load(self.directory / "boxes.npy")

    def __len__(self) -> int:
        return len(self.boxes)

    def features(self, idx: Sequence[int], strides: Sequence[int], embedding: PatchEmbedding) -> Features:
        """Patch features of images ``idx`` for the stages ``strides`` (as the extractor computes
        them from the same maps), with ``valid`` marking patches on the padding."""
        idx = np.asarray(idx)
        maps = [torch.from_numpy(np.ascontiguousarray(self.maps[s][idx])) for s in strides]
        with torch.inference_mode():
            patches = patch_array(embedding(maps))
        boxes = [Box(*map(int, b)) for b in self.boxes[idx]]
        return Features(patches, None, valid_grid(boxes, self.image_size, patches.shape[1:3]))

    def iter_features(self, idx: Sequence[int], strides: Sequence[int], embedding: PatchEmbedding,
                      batch_size: int = 32) -> Iterator[Features]:
        idx = np.asarray(idx)
        for start in range(0, len(idx), batch_size):
            yield self.features(idx[start:start + batch_size], strides, embedding)


def stage_maps(backbone: Backbone, paths: Sequence[Path], image_size: int, resize: str,
               cache_dir: Path, batch_size: int = 32, progress: bool = True,
               desc: str = "extract", max_pixels: int = DEFAULT_MAX_PIXELS) -> StageMaps:
    """The stage maps of ``paths`` through ``backbone`` (all of its ``layers``), read from
    ``cache_dir`` when an extraction with the same backbone, weights, geometry and files
    (path, size, mtime) is there, else extracted now. Raises on the first unreadable image."""
    strides = backbone.strides
    key = hashlib.sha256(json.dumps({
        "backbone": backbone.name, "weights": backbone.weight_source.checksum,
        "layers": list(backbone.layers), "size": image_size, "resize": resize,
        "mean": backbone.mean, "std": backbone.std, "files": _fingerprint(paths),
    }).encode()).hexdigest()[:16]
    directory = Path(cache_dir) / f"{backbone.name}-{image_size}-{resize}-{key}"
    if (directory / "done").is_file():
        return StageMaps(directory, strides, image_size)
    directory.mkdir(parents=True, exist_ok=True)
    extractor = FeatureExtractor(backbone, image_size, None, batch_size, patches=False,
                                 resize=resize, maps=True, max_pixels=max_pixels)
    arrays: dict[int, np.ndarray] = {}
    boxes = np.zeros((len(paths), 4), np.int64)
    start = 0
    with Progress(len(paths), desc, enabled=progress) as bar:
        for item in extractor.iter_extract(paths, progress=bar):
            raise_first_error(item.batch, paths)
            if not item.batch.indices:
                continue
            for stride, fmap in zip(strides, item.maps, strict=True):
                if stride not in arrays:
                    arrays[stride] = np.lib.format.open_memmap(
                        directory / f"stride{stride}.npy", mode="w+", dtype=np.float32,
                        shape=(len(paths), *fmap.shape[1:]))
                arrays[stride][start:start + len(fmap)] = fmap
            for j, box in enumerate(item.batch.boxes):
                boxes[start + j] = (box.top, box.left, box.height, box.width)
            start += len(item.batch.indices)
    for arr in arrays.values():
        arr.flush()
    backbone.release()
    np.save(directory / "boxes.npy", boxes)
    write_json(directory / "done", {"n": len(paths), "strides": list(strides)}, indent=None)
    return StageMaps(directory, strides, image_size)
