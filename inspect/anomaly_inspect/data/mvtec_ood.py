"""MVTec "similar / dissimilar" OOD (after "The Invisible Gorilla Effect"): ID classes vs a held-out defect.

General form: for any MVTec-layout category, ID = ``train/good`` plus
``test/<id group>`` images for the chosen groups, pooled and split by a seeded,
stratified k-fold (fold ``fold`` held out as ID test; the ID class label is the
group); OOD = the held-out defect group(s). A manifest CSV
(``datasets/mvtec_<category>_ood.csv``: columns ``category, relpath, colour``)
can split an OOD group by annotated colour, e.g. the paper's pill / metal-nut
colour lists; which colour is "similar" is configured, not assumed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .isic import OODData, kfold_split
from .layout import DatasetLayoutError, list_images
from .samples import Sample


def read_colour_manifest(path: Path | str, category: str | None = None) -> dict[str, list[str]]:
    """colour -> relative image paths, from a ``category, relpath, colour`` CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: colour manifest not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"category", "relpath", "colour"}
        if not need <= set(reader.fieldnames or []):
            raise DatasetLayoutError(f"{path}: needs columns {sorted(need)}, found {reader.fieldnames}")
        out: dict[str, list[str]] = {}
        for row in reader:
            if category is None or row["category"] == category:
                out.setdefault(row["colour"], []).append(row["relpath"])
    if not out:
        raise DatasetLayoutError(f"{path}: no rows for category {category!r}")
    return out


def mvtec_heldout_benchmark(
    root: Path | str, category: str, id_groups: Sequence[str], ood_groups: dict[str, Sequence[str]],
    colour_manifest: Path | str | None = None, folds: int = 5, fold: int = 0, seed: int = 0,
) -> OODData:
    """ID = good (train + test) and ``id_groups``; each OOD split = listed groups or colours.

    ``ood_groups`` maps a split name to defect-group names, or to ``colour:<name>`` entries
    that select images of the colour manifest.
    """
    cat_dir = Path(root) / category
    if not (cat_dir / "test").is_dir():
        raise FileNotFoundError(f"{cat_dir}: not an MVTec-layout category (no test/ folder)")
    groups = ["good", *[g for g in id_groups if g != "good"]]
    paths: list[Path] = []
    labels: list[int] = []
    for gi, g in enumerate(groups):
        dirs = [cat_dir / "train" / "good", cat_dir / "test" / "good"] if g == "good" else [cat_dir / "test" / g]
        for d in dirs:
            if not d.is_dir():
                raise DatasetLayoutError(f"{d}: missing folder for ID group '{g}'")
            imgs = list_images(d)
            paths += imgs
            labels += [gi] * len(imgs)
    y = np.array(labels, np.int64)
    tr, te = kfold_split(y, folds, fold, seed)
    colours = read_colour_manifest(colour_manifest, category) if colour_manifest else {}
    ood: dict[str, list[Sample]] = {}
    for name, members in ood_groups.items():
        samples = []
        for m in members:
            if m.startswith("colour:"):
                col = m.split(":", 1)[1]
                if col not in colours:
                    raise DatasetLayoutError(f"{colour_manifest}: no images of colour '{col}' "
                                             f"(has: {', '.join(sorted(colours))})")
                for rel in colours[col]:
                    p = cat_dir / rel
                    if not p.is_file():
                        raise FileNotFoundError(f"{p}: listed in {colour_manifest} but missing")
                    samples.append(Sample(p, 1, "test", name))
            else:
                d = cat_dir / "test" / m
                if not d.is_dir():
                    raise DatasetLayoutError(f"{d}: missing folder for OOD group '{m}'")
                samples += [Sample(p, 1, "test", name) for p in list_images(d)]
        ood[name] = samples
    return OODData(
        name=f"mvtec_{category}",
        id_train=[Sample(paths[i], 0, "train", groups[y[i]]) for i in tr],
        id_train_labels=y[tr],
        id_test=[Sample(paths[i], 0, "test", groups[y[i]]) for i in te],
        ood=ood,
        notes={"id_groups": groups, "id_rule": f"good (train+test) + {groups[1:]}; stratified "
               f"{folds}-fold (seed {seed}), fold {fold} held out; ID training set contains defective "
               "ID-class images"},
    )
