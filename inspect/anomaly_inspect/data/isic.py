"""ISIC adapters: the ``index.csv`` manifest of ``isic2017_256`` and the ISIC archive layout.

Benchmark splits (benchmarks.md §2, after "The Invisible Gorilla Effect"):

* ID: artefact-annotated images with ink == patches == ruler == 0; ID-train =
  the ISIC-2017 training split, ID-test = validation + test. ID task (for
  classifier heads): melanoma vs not.
* OOD real: ``ink_*`` = ink == 1 (and no colour chart), ``charts_*`` =
  patches == 1, from any split; ``*_similar`` / ``*_dissimilar`` by the visible
  colours in ``labels/artefact_colours.csv`` (every listed colour in the set).
* Archive layout: a folder of ``<isic_id>.jpg|png`` images, a metadata CSV
  (``isic_id`` plus ``benign_malignant`` or ``diagnosis``) and id lists (one id
  a line, e.g. the paper's per-colour lists) for ID and each OOD split.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layout import DatasetLayoutError
from .samples import Sample

INDEX_COLUMNS = ("image_id", "split", "path", "melanoma_isic2017", "artefacts_annotated",
                 "ink", "patches", "ruler")
INK_SIMILAR = frozenset({"red", "brown"})
INK_DISSIMILAR = frozenset({"purple", "blue", "black", "green"})
CHART_SIMILAR = frozenset({"red", "orange", "yellow"})
CHART_DISSIMILAR = frozenset({"blue", "green", "black", "grey", "white"})
REAL_SPLITS = ("ink_all", "ink_similar", "ink_dissimilar",
               "charts_all", "charts_similar", "charts_dissimilar")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class IsicRecord:
    image_id: str
    split: str
    path: Path
    melanoma: int | None
    annotated: bool
    flags: dict[str, int] = field(default_factory=dict)


@dataclass
class OODData:
    """ID train / test samples (with ID class labels) and named OOD sample sets."""

    name: str
    id_train: list[Sample]
    id_train_labels: np.ndarray
    id_test: list[Sample]
    ood: dict[str, list[Sample]]
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        """Refuse an image in two of ID train, ID test and an OOD split (a config listing an ID
        group as OOD, an id list with repeats or shared with an OOD list): its AUROC would score
        what was fitted, or the same image as ID and as OOD."""
        role: dict[str, str] = {}
        sets = [("ID train", self.id_train), ("ID test", self.id_test),
                *((f"OOD split '{k}'", v) for k, v in self.ood.items())]
        for what, samples in sets:  # OOD splits may share images (ink_similar is in ink_all)
            for s in samples:
                key = os.path.realpath(s.path)
                if key in role and role[key] != what and role[key].startswith("ID"):
                    raise DatasetLayoutError(f"{s.path}: both in {role[key]} and in {what}; "
                                             f"ID and OOD images must be distinct")
                role.setdefault(key, what)


def _read_csv(path: Path, required: Iterable[str], delimiter: str = ",") -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetLayoutError(f"{path}: missing columns {missing}; found {reader.fieldnames}")
        return list(reader)


def _int_or_none(value: str) -> int | None:
    value = (value or "").strip()
    return None if value == "" else int(float(value))


def read_isic_index(root: Path | str, index: str = "index.csv") -> list[IsicRecord]:
    """Records of ``root/index.csv``; image paths are resolved against ``root``."""
    root = Path(root)
    path = root / index
    records = []
    for i, row in enumerate(_read_csv(path, INDEX_COLUMNS), start=2):
        try:
            flags = {k: _int_or_none(row.get(k, "")) for k in
                     ("dark_corner", "hair", "gel_border", "gel_bubble", "ruler", "ink", "patches")}
            records.append(IsicRecord(row["image_id"], row["split"], root / row["path"],
                                      _int_or_none(row["melanoma_isic2017"]),
                                      row["artefacts_annotated"].strip() == "1", flags))
        except ValueError as exc:
            raise DatasetLayoutError(f"{path}, line {i}: bad value ({exc})") from None
    if not records:
        raise DatasetLayoutError(f"{path}: no rows")
    return records


def read_artefact_colours(path: Path | str) -> dict[str, tuple[set[str], set[str]]]:
    """image_id -> (ink colours, chart colours); 'none' gives an empty set."""
    rows = _read_csv(Path(path), ("image_id", "ink_colour", "chart_colour"))
    def split(v: str) -> set[str]:
        return {c for c in v.strip().split("+") if c and c != "none"}
    return {r["image_id"]: (split(r["ink_colour"]), split(r["chart_colour"])) for r in rows}


def _sample(r: IsicRecord, label: int, group: str) -> Sample:
    return Sample(r.path, label, r.split, group)


def isic_index_benchmark(root: Path | str, colours_csv: Path | str | None = None,
                         splits: Sequence[str] = REAL_SPLITS) -> OODData:
    """ID train / test and the real OOD splits of benchmarks.md §2 from ``index.csv``."""
    root = Path(root)
    records = read_isic_index(root)
    ann = [r for r in records if r.annotated]
    clean = [r for r in ann if r.flags["ink"] == 0 and r.flags["patches"] == 0 and r.flags["ruler"] == 0]
    train = [r for r in clean if r.split == "train"]
    test = [r for r in clean if r.split != "train"]
    bad = [r for r in train if r.melanoma is None]
    if bad:
        raise DatasetLayoutError(f"{root / 'index.csv'}: {len(bad)} ID training images lack a "
                                 f"melanoma label (first: {bad[0].image_id})")
    if not train or not test:
        raise DatasetLayoutError(f"{root / 'index.csv'}: no ID {'training' if not train else 'test'} images")
    unknown = sorted(set(splits) - set(REAL_SPLITS))
    if unknown:
        raise ValueError(f"unknown ISIC OOD splits {unknown}; available: {', '.join(REAL_SPLITS)}")
    colours = None
    if any(s.endswith(("similar", "dissimilar")) for s in splits):
        colours = read_artefact_colours(colours_csv or root / "labels" / "artefact_colours.csv")
    ink = [r for r in ann if r.flags["ink"] == 1 and r.flags["patches"] != 1]
    charts = [r for r in ann if r.flags["patches"] == 1]

    def by_colour(rs: list[IsicRecord], which: int, allowed: frozenset) -> list[IsicRecord]:
        out = []
        for r in rs:
            cols = colours.get(r.image_id, (set(), set()))[which]
            if cols and cols <= allowed:
                out.append(r)
        return out

    table = {
        "ink_all": lambda: ink,
        "ink_similar": lambda: by_colour(ink, 0, INK_SIMILAR),
        "ink_dissimilar": lambda: by_colour(ink, 0, INK_DISSIMILAR),
        "charts_all": lambda: charts,
        "charts_similar": lambda: by_colour(charts, 1, CHART_SIMILAR),
        "charts_dissimilar": lambda: by_colour(charts, 1, CHART_DISSIMILAR),
    }
    ood = {s: [_sample(r, 1, s) for r in table[s]()] for s in splits}
    return OODData(
        name="isic2017",
        id_train=[_sample(r, 0, "id") for r in train],
        id_train_labels=np.array([r.melanoma for r in train], np.int64),
        id_test=[_sample(r, 0, "id") for r in test],
        ood=ood,
        notes={"id_rule": "artefacts_annotated == 1 and ink == patches == ruler == 0; "
                          "train split -> ID train, val + test -> ID test",
               "colour_groups": {"ink_similar": sorted(INK_SIMILAR), "ink_dissimilar": sorted(INK_DISSIMILAR),
                                 "charts_similar": sorted(CHART_SIMILAR),
                                 "charts_dissimilar": sorted(CHART_DISSIMILAR)}},
    )


# --- ISIC archive layout --------------------------------------------------------------------
def read_id_list(path: Path | str) -> list[str]:
    """Ids one per line ('#' comments and blank lines ignored; extensions and paths stripped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: id list not found")
    ids = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(Path(line).stem)
    if not ids:
        raise DatasetLayoutError(f"{path}: id list is empty")
    seen: set[str] = set()
    repeats = [i for i in ids if i in seen or seen.add(i)]
    if repeats:
        raise DatasetLayoutError(f"{path}: {len(repeats)} id(s) listed twice (first: "
                                 f"{', '.join(repeats[:5])})")
    return ids


def resolve_archive_images(ids: Sequence[str], image_dir: Path | str) -> list[Path]:
    """``<image_dir>/<id>.jpg|jpeg|png`` for each id; errors name the missing ids."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    present = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [i for i in ids if i not in present]
    if missing:
        raise DatasetLayoutError(f"{image_dir}: {len(missing)} of {len(ids)} listed images are missing "
                                 f"(first: {', '.join(missing[:5])})")
    return [present[i] for i in ids]


def read_archive_labels(metadata_csv: Path | str) -> dict[str, int]:
    """isic_id -> 1 for malignant, 0 otherwise (``benign_malignant`` or ``diagnosis`` column)."""
    path = Path(metadata_csv)
    rows = _read_csv(path, ("isic_id",))
    out = {}
    for r in rows:
        if "benign_malignant" in r and r["benign_malignant"]:
            out[r["isic_id"]] = int(r["benign_malignant"].strip().lower() == "malignant")
        elif "diagnosis" in r:
            out[r["isic_id"]] = int(r["diagnosis"].strip().lower() in ("melanoma", "basal cell carcinoma",
                                                                       "squamous cell carcinoma"))
        else:
            raise DatasetLayoutError(f"{path}: needs a 'benign_malignant' or 'diagnosis' column")
    return out


def kfold_split(labels: np.ndarray, folds: int = 5, fold: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded k-fold: (train indices, held-out indices) of ``fold``."""
    from sklearn.model_selection import StratifiedKFold

    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    counts = np.unique(labels, return_counts=True)[1]
    if counts.min() < folds:
        raise ValueError(f"cannot make {folds} stratified folds: the smallest ID class has "
                         f"{counts.min()} images (class sizes {counts.tolist()})")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, held = list(skf.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(train), np.sort(held)


def isic_archive_benchmark(image_dir: Path | str, metadata_csv: Path | str, id_list: Path | str,
                           ood_lists: dict[str, Path | str], folds: int = 5, fold: int = 0,
                           seed: int = 0) -> OODData:
    """ID = ids of ``id_list`` (paper: ``training_data.txt``), k-fold split; OOD = one split per list."""
    labels_by_id = read_archive_labels(metadata_csv)
    ids = read_id_list(id_list)
    unlabelled = [i for i in ids if i not in labels_by_id]
    if unlabelled:
        raise DatasetLayoutError(f"{metadata_csv}: no label for {len(unlabelled)} ID images "
                                 f"(first: {', '.join(unlabelled[:5])})")
    paths = resolve_archive_images(ids, image_dir)
    labels = np.array([labels_by_id[i] for i in ids], np.int64)
    tr, te = kfold_split(labels, folds, fold, seed)
    ood = {}
    for name, lst in ood_lists.items():
        ood[name] = [Sample(p, 1, "ood", name) for p in resolve_archive_images(read_id_list(lst), image_dir)]
    return OODData(
        name="isic_archive",
        id_train=[Sample(paths[i], 0, "train", "id") for i in tr],
        id_train_labels=labels[tr],
        id_test=[Sample(paths[i], 0, "test", "id") for i in te],
        ood=ood,
        notes={"id_rule": f"ids of {id_list}; stratified {folds}-fold (seed {seed}), fold {fold} held out"},
    )
