"""MVTec "similar / dissimilar" OOD (after "The Invisible Gorilla Effect"): ID classes vs a held-out defect.

General form: for any MVTec-layout category, ID = ``train/good`` plus
``test/<id group>`` images for the chosen groups, pooled and split by a seeded,
stratified k-fold (fold ``fold`` held out as ID test; the ID class label is the
group); OOD = the held-out defect group(s). A manifest CSV
(``datasets/mvtec_<category>_ood.csv``: columns ``category, relpath, colour``)
can split an OOD group by annotated colour, e.g. the paper's pill / metal-nut
colour lists (``meta/mvtec_color_defect_groups.csv`` of ``../shared/data``, columns
``category, path, colour_group, mask_mean_r/g/b``, is read too). Which colour group
is "similar" is decided by :func:`colour_similarity`, without OOD labels: the group
whose annotated mean colour is nearest (RGB) to the object's mean colour on the
ID-train ``good`` images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .image_io import read_image
from .isic import OODData, kfold_split, read_csv_rows
from .layout import DatasetLayoutError, list_images
from .mvtec import missing_category_hint
from .samples import Sample

log = logging.getLogger(__name__)

#: accepted column names: (relative path, colour) in the repo's manifests / the shared meta CSV
_MANIFEST_COLUMNS = (("relpath", "colour"), ("path", "colour_group"))


def _manifest_rows(path: Path | str, category: str | None
                   ) -> tuple[list[tuple[int, dict]], str, str]:
    """(line, row) of ``category``'s rows (all rows for None), and the path and colour columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: colour manifest not found")
    header, rows = read_csv_rows(path)
    cols = next((c for c in _MANIFEST_COLUMNS if {"category", *c} <= set(header)), None)
    if cols is None:
        raise DatasetLayoutError(f"{path}: needs columns category + relpath, colour (or path, "
                                 f"colour_group), found {header}")
    return [(i, r) for i, r in rows if category is None or r["category"] == category], *cols


def read_colour_manifest(path: Path | str, category: str | None = None) -> dict[str, list[str]]:
    """colour -> relative image paths, from a ``category, relpath, colour`` CSV (or the shared
    ``category, path, colour_group, ...`` meta CSV)."""
    rows, rel, col = _manifest_rows(path, category)
    out: dict[str, list[str]] = {}
    for _, row in rows:
        out.setdefault(row[col], []).append(row[rel])
    if not out:
        raise DatasetLayoutError(f"{path}: no rows for category {category!r}")
    return out


def read_group_colours(path: Path | str, category: str) -> dict[str, np.ndarray]:
    """colour group -> mean of its images' measured mean RGB inside the defect mask
    (``mask_mean_r/g/b`` columns of the shared meta CSV). A cell that is not a finite number
    is refused naming the line and column (it would make every distance of the rule NaN)."""
    rows, _, col = _manifest_rows(path, category)
    need = ("mask_mean_r", "mask_mean_g", "mask_mean_b")
    if not rows or any(k not in rows[0][1] for k in need):
        raise DatasetLayoutError(f"{path}: needs columns {', '.join(need)} for the colour-similarity rule")
    groups: dict[str, list[list[float]]] = {}
    for i, r in rows:
        groups.setdefault(r[col], []).append([_colour_cell(path, i, r, k) for k in need])
    return {g: np.mean(v, axis=0) for g, v in groups.items()}


def _colour_cell(path: Path | str, line: int, row: dict, column: str) -> float:
    """The measured colour in ``column`` of the manifest's ``row``; a cell that is not a finite
    number is a :class:`DatasetLayoutError` naming the file, line and column."""
    try:
        value = float(row[column])
    except (TypeError, ValueError):  # TypeError: a short row's missing cell (None)
        value = np.nan
    if not np.isfinite(value):
        raise DatasetLayoutError(f"{path}, line {line}: {column} {row[column]!r} is not a number "
                                 f"(the mean colour measured inside the image's defect mask)")
    return value


#: foreground = pixels whose RGB distance to the image's median border colour exceeds this
FOREGROUND_DISTANCE = 40.0
BORDER_PX = 8


def object_mean_colour(paths: Sequence[Path]) -> np.ndarray:
    """Mean RGB of the object (foreground) over normal images: pixels farther than
    ``FOREGROUND_DISTANCE`` from the median colour of the image's ``BORDER_PX`` border. Images
    are read as everywhere else (:func:`.image_io.read_image`: upright by EXIF orientation,
    within the pixel budget, 16 bit scaled to 8)."""
    total, count = np.zeros(3), 0
    for p in paths:
        a = read_image(p).astype(np.float64)
        b = BORDER_PX
        border = np.concatenate([a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3),
                                 a[:, :b].reshape(-1, 3), a[:, -b:].reshape(-1, 3)])
        fg = np.linalg.norm(a - np.median(border, axis=0), axis=-1) > FOREGROUND_DISTANCE
        total += a[fg].sum(axis=0)
        count += int(fg.sum())
    if count == 0:
        raise ValueError("object colour: no foreground pixel in the normal images")
    return total / count


def check_similarity_groups(group_rgb: dict[str, np.ndarray], groups: Sequence[str]) -> None:
    """Refuse ``groups`` the rule cannot compare: fewer than two, or a name that is not one of
    the manifest's colour groups (``group_rgb``'s keys): a group's colour is looked up by its name."""
    if len(set(groups)) < 2:
        raise ValueError(f"needs at least 2 colour groups to compare, got {list(groups)}")
    unknown = [g for g in groups if g not in group_rgb]
    if unknown:
        raise ValueError(f"{unknown} are not colour groups of the manifest, whose groups for this "
                         f"category are {sorted(group_rgb)}; a group's colour is looked up by its "
                         f"name, so name each split after the colour group it holds")


def check_colour_splits(splits: dict[str, Sequence[Path]], colours: dict[str, list[str]],
                        cat_dir: Path) -> None:
    """Refuse a split whose images are not all of the colour group it is named after
    (``colours``: group -> manifest paths relative to ``cat_dir``): the rule gives the split
    that group's colour, which says nothing of its other images."""
    for name, paths in splits.items():
        own = {os.path.realpath(cat_dir / rel) for rel in colours.get(name, [])}
        foreign = [p for p in paths if os.path.realpath(p) not in own]
        if foreign:
            raise ValueError(f"split '{name}' holds {len(foreign)} image(s) outside colour group "
                             f"'{name}' (first: {foreign[0]}); the rule gives the split that group's "
                             f"colour, so it must hold only colour:{name} images")


def colour_similarity(object_rgb: np.ndarray, group_rgb: dict[str, np.ndarray],
                      groups: Sequence[str]) -> dict:
    """The rule: of ``groups``, the one whose mean colour is nearest (Euclidean RGB) to the
    object's mean colour is "similar", the farthest "dissimilar"."""
    check_similarity_groups(group_rgb, groups)
    dist = {g: float(np.linalg.norm(group_rgb[g] - object_rgb)) for g in groups}
    order = sorted(groups, key=dist.__getitem__)
    return {"similar": order[0], "dissimilar": order[-1],
            "object_rgb": [round(float(v), 1) for v in object_rgb],
            "group_rgb": {g: [round(float(v), 1) for v in group_rgb[g]] for g in groups},
            "distance": {g: round(d, 1) for g, d in dist.items()},
            "rule": f"similar = the colour group whose mean defect colour (measured inside the masks) "
                    f"is nearest in RGB to the object's mean colour on the ID-train good images "
                    f"(foreground: RGB distance > {FOREGROUND_DISTANCE:g} from the median "
                    f"{BORDER_PX}-px border colour); the groups' colours come from their own images' masks "
                    f"(the split's definition), no score or detection outcome enters"}


def check_no_repeats(key: str, groups: Sequence[str], hint: str = "list each group once") -> None:
    """Refuse a name listed more than once under ``key`` (a repeated ID group put its images in
    ID train and ID test both, and was reported as such; a repeated split or defect group
    counted its images twice); ``hint`` ends the message where given."""
    repeated = sorted({g for g in groups if list(groups).count(g) > 1})
    if repeated:
        raise ValueError(f"{key}: {repeated} listed more than once" + (f"; {hint}" if hint else ""))


def mvtec_heldout_benchmark(
    root: Path | str, category: str, id_groups: Sequence[str], ood_groups: dict[str, Sequence[str]],
    colour_manifest: Path | str | None = None, folds: int = 5, fold: int = 0, seed: int = 0,
) -> OODData:
    """ID = good (train + test) and ``id_groups``; each OOD split = listed groups or colours.

    ``ood_groups`` maps a split name to defect-group names, or to ``colour:<name>`` entries
    that select images of the colour manifest.
    """
    cat_dir = Path(root) / category
    if not cat_dir.is_dir():
        hint = missing_category_hint(Path(root), category) if Path(root).is_dir() else ""
        raise FileNotFoundError(f"{cat_dir}: category folder not found (data: root {root}, "
                                f"category {category}){hint}")
    if not (cat_dir / "test").is_dir():
        raise FileNotFoundError(f"{cat_dir}: not an MVTec-layout category (no test/ folder)")
    check_no_repeats("id_groups", id_groups)
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
        found: dict[str, Path] = {}  # resolved path -> the path as listed, first entry's
        repeats = 0
        for m in members:
            if m.startswith("colour:"):
                col = m.split(":", 1)[1]
                if col not in colours:
                    raise DatasetLayoutError(f"{colour_manifest}: no images of colour '{col}' "
                                             f"(has: {', '.join(sorted(colours))})")
                listed = [cat_dir / rel for rel in colours[col]]
                for p in listed:
                    if not p.is_file():
                        raise FileNotFoundError(f"{p}: listed in {colour_manifest} but missing")
            else:
                d = cat_dir / "test" / m
                if not d.is_dir():
                    raise DatasetLayoutError(f"{d}: missing folder for OOD group '{m}'")
                listed = list_images(d)
            for p in listed:
                key = os.path.realpath(p)
                repeats += key in found
                found.setdefault(key, p)
        if repeats:  # e.g. a colour: entry and the defect folder its images are in
            log.warning("OOD split '%s': %d image(s) brought in by more than one of %s are counted once",
                        name, repeats, list(members))
        ood[name] = [Sample(p, 1, "test", name) for p in found.values()]
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
