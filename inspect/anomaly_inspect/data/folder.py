"""Generic folder adapter: normal folder(s) to train on, normal and anomalous folders to test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .layout import DatasetLayoutError, list_images
from .mvtec import AnomalyDataset
from .samples import Sample


def load_folders(
    train_dirs: Sequence[Path | str],
    test_normal_dirs: Sequence[Path | str] = (),
    test_anomalous_dirs: Sequence[Path | str] = (),
    mask_dir: Path | str | None = None,
    name: str = "folder",
) -> AnomalyDataset:
    """Build a dataset from plain folders; masks (optional) pair by file stem. A named folder
    without images is refused (a mistyped path must not pass as an empty split)."""
    def images(d: Path | str) -> list[Path]:
        found = list_images(d)
        if not found:
            raise DatasetLayoutError(f"{d}: no images in this folder")
        return found

    train = [Sample(p, 0, "train", "good") for d in train_dirs for p in images(d)]
    if not train:
        raise DatasetLayoutError(f"no training images in {', '.join(map(str, train_dirs))}")
    test = [Sample(p, 0, "test", "good") for d in test_normal_dirs for p in images(d)]
    masks = {}
    if mask_dir is not None:
        for m in images(mask_dir):
            masks[m.stem.removesuffix("_mask")] = m
    missing = []
    for d in test_anomalous_dirs:
        for p in images(d):
            mask = masks.get(p.stem)
            if mask_dir is not None and mask is None:
                missing.append(str(p))
            test.append(Sample(p, 1, "test", Path(d).name, mask))
    if missing:
        raise DatasetLayoutError(f"{mask_dir}: no mask for {len(missing)} image(s): {missing[:5]}")
    groups = sorted({s.group for s in test})
    return AnomalyDataset(name, train, test, bool(masks), groups)
