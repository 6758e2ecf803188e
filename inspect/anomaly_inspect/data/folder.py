"""Generic folder adapter: normal folder(s) to train on, normal and anomalous folders to test."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..files import overlaps
from .layout import (
    DatasetLayoutError,
    canonical_path,
    check_disjoint,
    list_images,
    listing_order,
    nfc,
)
from .mvtec import AnomalyDataset, mask_image_stem, refuse_empty_path
from .samples import Sample


def path_list(value: Any, name: str) -> list[Path | str]:
    """``value``, an API argument naming images or folders, as a list: one path (a str or
    ``os.PathLike``) is a one-item list, a list, tuple or iterator of them is listed; anything
    else (an image, an array, bytes, a mapping) is refused naming ``name``. Without this a str
    was read character by character ("/" first: the whole filesystem). An empty path (``""``,
    the current folder) is refused too (:func:`.mvtec.refuse_empty_path`)."""
    if isinstance(value, str | os.PathLike):
        refuse_empty_path(value, name)
        return [value]
    if isinstance(value, list | tuple | Iterator):
        items = list(value)
        bad = next((i for i in items if not isinstance(i, str | os.PathLike)), None)
        if bad is None:
            for item in items:
                refuse_empty_path(item, name)
            return items
        got = f"a {type(value).__name__} holding a {_type_name(bad)}"
    else:
        got = f"a {_type_name(value)}"
    raise TypeError(f"{name}: expected paths of images or folders (a str or os.PathLike, or a "
                    f"list of them), got {got}")


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def load_folders(
    train_dirs: Sequence[Path | str] | Path | str,
    test_normal_dirs: Sequence[Path | str] | Path | str = (),
    test_anomalous_dirs: Sequence[Path | str] | Path | str = (),
    mask_dir: Path | str | None = None,
    name: str = "folder",
) -> AnomalyDataset:
    """Build a dataset from plain folders; masks (optional) pair by file stem. A named folder
    without images is refused (a mistyped path must not pass as an empty split), and so are
    an empty ``train_dirs`` and a file that lands in two splits or labels, or twice in one
    split through folders that overlap (links to one file within a split are kept once:
    :func:`.layout.check_disjoint`). Each of the three may name one folder or a list. Each
    anomalous folder is one defect type (group), see :func:`defect_groups`. The training
    images come in :func:`.layout.listing_order` (a single folder's as listed); the test
    images as the folders were named."""
    train_dirs = path_list(train_dirs, "train_dirs")
    if not train_dirs:  # each folder named must hold images: only no folder gives no images
        raise DatasetLayoutError("train_dirs: no training images given (an empty list)")
    test_normal_dirs = path_list(test_normal_dirs, "test_normal_dirs")
    test_anomalous_dirs = path_list(test_anomalous_dirs, "test_anomalous_dirs")
    refuse_empty_path(mask_dir, "mask_dir")

    def images(d: Path | str) -> list[Path]:
        found = list_images(d)
        if not found:
            raise DatasetLayoutError(f"{d}: no images in this folder")
        return found

    # in the one listing order (fit's too), whatever order and spelling the folders were named
    # in: the fit's seeded draws (the coreset's) go by position, so they depend on the images only
    train = [Sample(p, 0, "train", "good")
             for p in listing_order([p for d in train_dirs for p in images(d)])]
    test = [Sample(p, 0, "test", "good") for d in test_normal_dirs for p in images(d)]
    test += [Sample(p, 1, "test", group) for d, group in
             zip(test_anomalous_dirs, defect_groups(test_anomalous_dirs), strict=True) for p in images(d)]
    masks = None if mask_dir is None else images(mask_dir)
    if mask_dir is not None:
        _check_mask_dir_apart(mask_dir, {"training": train_dirs, "normal test": test_normal_dirs,
                                         "anomalous test": test_anomalous_dirs})
    train, test = check_disjoint(train, test)
    if masks is not None:
        test = _with_masks(test, mask_dir, masks)
    groups = sorted({s.group for s in test})
    return AnomalyDataset(name, train, test, mask_dir is not None, groups)


def defect_groups(dirs: Sequence[Path | str]) -> list[str]:
    """One defect-type name per anomalous folder: its base name, or, where another folder
    shares that name or it is ``good`` (the normal images' group), as many of its parent
    folders as set it apart, joined by ``/`` (``a/bad``, ``b/bad``). Folders that are one path
    keep one name (the file check refuses them)."""
    parts = [Path(os.path.abspath(d)).parts for d in dirs]
    depth = [1] * len(dirs)
    while True:
        names = [str(Path(*p[-n:])) for p, n in zip(parts, depth, strict=True)]
        clash = [i for i, name in enumerate(names)
                 if (names.count(name) > 1 or name == "good") and depth[i] < len(parts[i])]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def _check_mask_dir_apart(mask_dir: Path | str, image_dirs: dict[str, list[Path | str]]) -> None:
    """Refuse a mask folder that is, holds or lies in an image folder (links resolved): both are
    read with their sub-folders, so its masks would be read as images, or its images as masks
    (then named "two masks" for one image)."""
    masks = canonical_path(mask_dir)
    for role, dirs in image_dirs.items():
        for d in dirs:
            folder = canonical_path(d)
            if overlaps(masks, folder):
                raise DatasetLayoutError(f"{mask_dir}: the mask folder overlaps the {role} folder "
                                         f"{d}; masks must be in a folder of their own")


def _with_masks(test: list[Sample], mask_dir: Path | str, masks: list[Path]) -> list[Sample]:
    """The anomalous test samples with their masks, paired by file stem (``<stem>_mask.<ext>``
    or ``<stem>.<ext>``) in one Unicode form (:func:`.layout.nfc`, as the MVTec layout); a stem
    two masks or two anomalous images share is refused, and so is a mask no anomalous image
    pairs with (as in the MVTec layout: a misnamed mask must not leave its image unpaired or
    vanish)."""
    by_stem: dict[str, Path] = {}
    for m in masks:
        stem = nfc(mask_image_stem(m))
        if stem in by_stem:
            raise DatasetLayoutError(f"{mask_dir}: two masks for the images named {stem!r}: "
                                     f"{by_stem[stem]} and {m}")
        by_stem[stem] = m
    owner: dict[str, Path] = {}
    missing, out = [], []
    for s in test:
        if s.label == 1:
            stem = nfc(s.path.stem)
            if stem in owner:
                raise DatasetLayoutError(f"{s.path}: named like {owner[stem]}; masks pair "
                                         f"by name, so anomalous images need distinct names")
            owner[stem] = s.path
            if stem not in by_stem:
                missing.append(str(s.path))
            s = Sample(s.path, 1, "test", s.group, by_stem.get(stem))
        out.append(s)
    if missing:
        raise DatasetLayoutError(f"{mask_dir}: no mask for {len(missing)} image(s): {missing[:5]}")
    stray = [str(m) for stem, m in by_stem.items() if stem not in owner]
    if stray:
        raise DatasetLayoutError(f"{mask_dir}: {len(stray)} mask(s) have no matching anomalous "
                                 f"image: {stray[:5]}")
    return out
