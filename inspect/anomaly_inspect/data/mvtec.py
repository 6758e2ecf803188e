"""MVTec AD layout adapter (works for any category that follows the layout).

Layout::

    CATEGORY/train/good/*.png
    CATEGORY/test/<good|defect>/*.png
    CATEGORY/ground_truth/<defect>/<stem>_mask.png     (optional)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .layout import DatasetLayoutError, list_images
from .samples import Sample

log = logging.getLogger(__name__)

GOOD = "good"


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


def _mask_for(gt_dir: Path, image: Path) -> Path | None:
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png", f"{image.stem}_mask{image.suffix}"):
        cand = gt_dir / name
        if cand.is_file():
            return cand
    return None


def load_mvtec(root: Path | str, category: str | None = None) -> AnomalyDataset:
    """Read an MVTec-layout category; ``root/category`` or ``root`` itself if no category."""
    root = Path(root)
    cat_dir = root / category if category else root
    name = category or root.name
    if not cat_dir.is_dir():
        hint = ""
        if root.is_dir():
            cats = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
            hint = f"; categories found under {root}: {', '.join(cats) or 'none'}"
        raise FileNotFoundError(f"{cat_dir}: category folder not found{hint}")
    train_dir, test_dir = cat_dir / "train" / GOOD, cat_dir / "test"
    for needed in (train_dir, test_dir):
        if not needed.is_dir():
            raise DatasetLayoutError(
                f"{needed}: missing; an MVTec-layout category needs train/good/ and test/<type>/"
            )
    train = [Sample(p, 0, "train", GOOD) for p in list_images(train_dir)]
    if not train:
        raise DatasetLayoutError(f"{train_dir}: no training images found")

    gt_root = cat_dir / "ground_truth"
    has_masks = gt_root.is_dir()
    test: list[Sample] = []
    groups = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    if not groups:
        raise DatasetLayoutError(f"{test_dir}: no test/<type>/ folders found")
    problems: list[str] = []
    for group in groups:
        label = 0 if group == GOOD else 1
        images = list_images(test_dir / group)
        if has_masks and label == 1:
            gt_dir = gt_root / group
            if not gt_dir.is_dir():
                problems.append(f"{gt_dir}: no mask folder for defect type '{group}'")
                continue
            paired = set()
            for img in images:
                mask = _mask_for(gt_dir, img)
                if mask is None:
                    problems.append(f"{img}: no mask {gt_dir / (img.stem + '_mask.png')}")
                else:
                    paired.add(mask)
                test.append(Sample(img, label, "test", group, mask))
            for extra in sorted(set(list_images(gt_dir)) - paired):
                problems.append(f"{extra}: mask has no matching image in {test_dir / group}")
        else:
            test.extend(Sample(p, label, "test", group) for p in images)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetLayoutError(f"{cat_dir}: images and masks do not pair up:\n  {shown}{more}")
    if not test:
        raise DatasetLayoutError(f"{test_dir}: no test images found")
    log.info("%s: %d train, %d test images (%d anomalous), masks: %s",
             name, len(train), len(test), sum(s.label for s in test), has_masks)
    return AnomalyDataset(name, train, test, has_masks, groups)
