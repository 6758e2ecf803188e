"""MVTec AD layout adapter (works for any category that follows the layout).

Layout::

    CATEGORY/train/good/*.png
    CATEGORY/test/<good|defect>/*.png
    CATEGORY/ground_truth/<defect>/<stem>_mask.png     (optional; or <stem>.png, any image
                                                        extension; nested folders mirror test/)
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .layout import DatasetLayoutError, check_disjoint, list_images, listing_order, nfc
from .samples import Sample

log = logging.getLogger(__name__)

GOOD = "good"
TRAIN_GOOD = f"train/{GOOD}"  # the training images, below a category folder
MASK_SUFFIX = "_mask"


@dataclass
class AnomalyDataset:
    """Train (normal only) and test samples of one category."""

    name: str
    train: list[Sample]
    test: list[Sample]
    has_masks: bool = False
    groups: list[str] = field(default_factory=list)

    @property
    def n_anomalous(self) -> int:
        return sum(1 for s in self.test if s.label == 1)


def refuse_empty_path(value: object, name: str) -> None:
    """Refuse ``""`` as the path of option ``name``: ``Path("")`` is the current folder, so a
    path left empty by mistake would read whatever folder the program runs in."""
    if isinstance(value, str) and not value:
        raise ValueError(f'{name}: an empty path (""), which would be the current folder; '
                         f'write "." if that is meant')


def mask_image_stem(mask: Path) -> str:
    """The stem of the image a mask file is named for: ``<stem>_mask.<ext>`` (any case) or
    ``<stem>.<ext>``."""
    return mask.stem[:-len(MASK_SUFFIX)] if mask.stem.lower().endswith(MASK_SUFFIX) else mask.stem


def _mask_index(gt_dir: Path) -> dict[tuple[str, str], list[Path]]:
    """The masks under ``gt_dir`` by (folder relative to it, image stem), both in NFC:
    ``<stem>_mask.<ext>`` or ``<stem>.<ext>``, any image extension in any case."""
    index: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for m in list_images(gt_dir):
        index[(nfc(m.parent.relative_to(gt_dir).as_posix()), nfc(mask_image_stem(m)))].append(m)
    return index


def _pair_masks(images: list[Path], image_dir: Path, gt_dir: Path,
                problems: list[str]) -> list[Path | None]:
    """Each image's mask, by the image's path relative to ``image_dir`` (a nested image has its
    mask in the same sub-folder of ``gt_dir``); what does not pair one to one goes to
    ``problems``."""
    index = _mask_index(gt_dir)
    owner: dict[Path, Path] = {}
    out: list[Path | None] = []
    for img in images:
        rel = img.parent.relative_to(image_dir).as_posix()
        found = index.get((nfc(rel), nfc(img.stem)), [])
        mask = found[0] if len(found) == 1 else None
        if not found:
            problems.append(f"{img}: no mask {gt_dir / rel / (img.stem + MASK_SUFFIX + '.png')}")
        elif len(found) > 1:
            problems.append(f"{img}: more than one mask: {', '.join(map(str, found))}")
        elif mask in owner:
            problems.append(f"{mask}: the mask of both {owner[mask]} and {img} (one name, two "
                            f"extensions); rename one")
            mask = None
        else:
            owner[mask] = img
        out.append(mask)
    paired = {m for ms in index.values() if len(ms) > 1 for m in ms} | set(owner)
    for extra in sorted({m for ms in index.values() for m in ms} - paired):
        problems.append(f"{extra}: mask has no matching image in {image_dir}")
    return out


def type_folder_label(test_dir: Path, group: str) -> int:
    """The label of the images in ``test_dir/group`` (a type folder right below test/): 0 for
    good, 1 for a defect type; a case variant of good (``Good``) is refused, being neither.
    The one rule of the adapter and of ``screen``'s MVTec labels."""
    if group == GOOD:
        return 0
    if group.lower() == GOOD:
        raise DatasetLayoutError(f"{test_dir / group}: normal test images go in test/{GOOD}/ "
                                 f"(lower case); '{group}' would be a defect type")
    return 1


def _mask_folder(gt_root: Path, group: str) -> Path:
    """``gt_root/group``, or the one folder there whose name is ``group`` in another Unicode
    form (NFD from macOS, NFC elsewhere)."""
    exact = gt_root / group
    if exact.is_dir():
        return exact
    same = [p for p in gt_root.iterdir() if nfc(p.name) == nfc(group) and p.is_dir()]
    return same[0] if len(same) == 1 else exact


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where it cannot be read (a root-only ``lost+found``)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _subfolders(root: Path) -> list[Path]:
    try:
        return sorted(root.iterdir())
    except OSError:
        return []


def _categories(root: Path) -> list[str]:
    """The folders in ``root`` that hold a train/ folder (unreadable ones skipped)."""
    return [p.name for p in _subfolders(root) if _is_dir(p / "train")]


def _images_or_none(folder: Path, recursive: bool = True) -> list[Path]:
    """:func:`.layout.list_images`, or none where the folder cannot be listed (for warnings
    about images left out: they must not stop a load)."""
    try:
        return list_images(folder, recursive)
    except OSError:
        return []


def _warn_outside_train_good(train_root: Path) -> None:
    """Warn of images in ``train_root`` but outside its good/ folder (directly in it or in
    another sub-folder), naming each folder and how many: only train/good/ is read, and a
    training image put elsewhere must not vanish unsaid."""
    loose = _images_or_none(train_root, recursive=False)
    if loose:
        log.warning("%s: %d image(s) directly in train/ left out (training images go in "
                    "train/%s/)", train_root, len(loose), GOOD)
    for sub in _subfolders(train_root):
        if sub.name != GOOD and not sub.name.startswith(".") and _is_dir(sub) \
                and (images := _images_or_none(sub)):
            log.warning("%s: %d image(s) left out of training (only train/%s/ is read)",
                        sub, len(images), GOOD)


def missing_category_hint(root: Path, category: str) -> str:
    """What to say where ``root/category`` is missing: the categories ``root`` holds, and the
    folders one level below it that hold ``category`` (a root given one level too high, e.g.
    the folder of several datasets)."""
    hint = f"; categories found under {root}: {', '.join(_categories(root)) or 'none'}"
    below = [p for p in _subfolders(root) if _is_dir(p / category / "train")]
    if below:
        hint += f"; {category} is under {' and '.join(map(str, below))}: pass that as the root"
    return hint


def _category_folder(root: Path | str, category: str | None, needed: tuple[str, ...]) -> Path:
    """``root/category`` (``root`` itself without a category), checked: the root and the
    category folder exist, and so does each of its sub-folders ``needed``; each missing one is
    named, with the categories found where a category is to be named."""
    refuse_empty_path(root, "root")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset root not found")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: dataset root is a file, not a folder")
    cat_dir = root / category if category else root
    if not cat_dir.is_dir():
        hint = (f"; {root} is itself a category folder (it has train/): leave out the category "
                f"(--category)" if (root / "train").is_dir() else missing_category_hint(root, category))
        raise FileNotFoundError(f"{cat_dir}: category folder not found{hint}")
    for needed_dir in (cat_dir / sub for sub in needed):
        if not needed_dir.is_dir():
            cats = [] if category or (root / "train").is_dir() else _categories(root)
            hint = f"; categories found under {root}: {', '.join(cats)}: name one (--category)" \
                if cats else ""
            raise DatasetLayoutError(
                f"{needed_dir}: missing; an MVTec-layout category needs train/good/ and "
                f"test/<type>/{hint}"
            )
    return cat_dir


def load_mvtec_train(root: Path | str, category: str | None = None) -> list[Sample]:
    """The training split of an MVTec-layout category (``train/good``) as :func:`load_mvtec`
    gives it, without reading (or needing) its test split: the same images in fit's order (a
    file linked twice within the split once), the same warnings (images in train/ outside
    good/) and errors (a missing root, category or train/good, no images). ``tune --root``
    without ``--judge`` reads this alone."""
    train = _train_split(_category_folder(root, category, (TRAIN_GOOD,)))
    return check_disjoint(train, [], repeats="once")[0]


def _train_split(cat_dir: Path) -> list[Sample]:
    """The training images of the checked category folder ``cat_dir``, links to one file not
    yet counted once (:func:`load_mvtec` does it with the test split, in one pass)."""
    train_dir = cat_dir / TRAIN_GOOD
    # fit's order (a folder of links to files elsewhere: by the files, as fit orders them)
    train = [Sample(p, 0, "train", GOOD) for p in listing_order(list_images(train_dir))]
    if not train:
        raise DatasetLayoutError(f"{train_dir}: no training images found")
    _warn_outside_train_good(cat_dir / "train")
    return train


def load_mvtec(root: Path | str, category: str | None = None) -> AnomalyDataset:
    """Read an MVTec-layout category; ``root/category`` or ``root`` itself if no category.

    Images are compared as files (:func:`.layout.check_disjoint`, as the folder adapter does;
    a symbolic or hard link is its file): a file that is both a training and a test image, or
    both normal and anomalous, is refused; two links to one file within a split count once.
    Names pair masks and type folders in one Unicode form (:func:`.layout.nfc`), so that a
    name copied from macOS pairs with one typed elsewhere. The training split is
    :func:`load_mvtec_train`'s."""
    cat_dir = _category_folder(root, category, (TRAIN_GOOD, "test"))
    name = Path(os.path.abspath(cat_dir)).name  # "cat/", "." and ".." named as the folder is
    test_dir = cat_dir / "test"
    train = _train_split(cat_dir)

    gt_root = cat_dir / "ground_truth"
    has_masks = gt_root.is_dir()
    test: list[Sample] = []
    groups = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not groups:
        raise DatasetLayoutError(f"{test_dir}: no test/<type>/ folders found")
    labels = {group: type_folder_label(test_dir, group) for group in groups}
    loose = list_images(test_dir, recursive=False)
    if loose:
        log.warning("%s: %d image(s) directly in test/ left out (test images go in "
                    "test/<type>/)", test_dir, len(loose))
    if has_masks and _is_dir(gt_root / GOOD) and (normal := _images_or_none(gt_root / GOOD)):
        log.warning("%s: %d mask(s) of normal images not read (only a defect type's images "
                    "have masks; a normal image has no defect area)", gt_root / GOOD, len(normal))
    problems: list[str] = []
    for group in groups:
        label = labels[group]
        images = list_images(test_dir / group)
        if not images:  # left out before its masks are looked for: it needs none
            log.warning("%s: no images; '%s' left out of the test split", test_dir / group, group)
            continue
        if has_masks and label == 1:
            gt_dir = _mask_folder(gt_root, group)
            if not gt_dir.is_dir():
                problems.append(f"{gt_dir}: no mask folder for defect type '{group}'")
                continue
            masks = _pair_masks(images, test_dir / group, gt_dir, problems)
            test.extend(Sample(img, label, "test", group, m)
                        for img, m in zip(images, masks, strict=True))
        else:
            test.extend(Sample(p, label, "test", group) for p in images)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetLayoutError(f"{cat_dir}: images and masks do not pair up:\n  {shown}{more}")
    if not test:
        raise DatasetLayoutError(f"{test_dir}: no test images found")
    # a training image linked into test/ is refused; two links to one file in a split count once
    train, test = check_disjoint(train, test, repeats="once")
    log.info("%s: %d train, %d test images (%d anomalous), masks: %s",
             name, len(train), len(test), sum(s.label for s in test), has_masks)
    return AnomalyDataset(name, train, test, has_masks, sorted({s.group for s in test}))
