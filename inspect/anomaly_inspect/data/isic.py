"""ISIC adapters: the ``index.csv`` manifest of ``isic2017_256`` and the ISIC archive layout.

Benchmark splits (benchmarks.md §2, after "The Invisible Gorilla Effect"):

* ID: artefact-annotated images with ink == patches == ruler == 0; ID-train =
  the ISIC-2017 training split, ID-test = validation + test. ID task (for
  classifier heads): melanoma vs not.
* OOD real: ``ink_*`` = ink == 1 (and no colour chart), ``charts_*`` =
  patches == 1, from any split; ``*_similar`` / ``*_dissimilar`` by the visible
  colours in ``labels/artefact_colours.csv`` (every listed colour in the set).
  Every ink / chart image needs a row there; its colours must come from the
  vocabulary of ``artefact_colours.md`` (:data:`INK_VOCABULARY`,
  :data:`CHART_VOCABULARY`); ``none`` (not visible) leaves it out of both groups,
  as do ``other`` / ``multi`` and mixed colours.
* Archive layout: a folder of ``<isic_id>.jpg|png`` images, a metadata CSV
  (``isic_id`` plus ``benign_malignant`` or ``diagnosis``) and id lists (one id
  a line, e.g. the paper's per-colour lists) for ID and each OOD split. Labels:
  see :func:`read_archive_labels` (``indeterminate/benign`` -> 0,
  ``indeterminate/malignant`` -> 1, plain ``indeterminate`` refused).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import not_utf8 as utf8_reason
from .layout import DatasetLayoutError, warn_copies
from .samples import Sample

INDEX_COLUMNS = ("image_id", "split", "path", "melanoma_isic2017", "artefacts_annotated",
                 "ink", "patches", "ruler")
INDEX_SPLITS = ("train", "val", "test")
FLAG_COLUMNS = ("dark_corner", "hair", "gel_border", "gel_bubble", "ruler", "ink", "patches")
ANNOTATED_FLAGS = ("ruler", "ink", "patches")  # the ID / OOD rule reads these
#: allowed values of labels/artefact_colours.csv (artefact_colours.md); several joined with '+'
INK_VOCABULARY = frozenset({"red", "purple", "blue", "black", "green", "brown", "other", "none"})
CHART_VOCABULARY = frozenset({"red", "orange", "yellow", "green", "blue", "black", "grey", "white",
                              "multi", "none"})
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
    flags: dict[str, int | None] = field(default_factory=dict)
    line: int = 0  # in index.csv


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
        what was fitted, or the same image as ID and as OOD; and an image twice in one OOD split,
        which would count it twice there. An ID test or OOD image with the bytes of an ID
        training image in another file (a copy) is warned about (:func:`.layout.warn_copies`)."""
        role: dict[str, str] = {}
        sets = [("ID train", self.id_train), ("ID test", self.id_test),
                *((f"OOD split '{k}'", v) for k, v in self.ood.items())]
        for what, samples in sets:  # OOD splits may share images (ink_similar is in ink_all)
            seen: set[str] = set()
            for s in samples:
                key = os.path.realpath(s.path)
                if key in seen and what.startswith("OOD"):
                    raise DatasetLayoutError(f"{s.path}: twice in {what}; each image must count once")
                seen.add(key)
                if key in role and role[key] != what and role[key].startswith("ID"):
                    raise DatasetLayoutError(f"{s.path}: both in {role[key]} and in {what}; "
                                             f"ID and OOD images must be distinct")
                role.setdefault(key, what)
        scored = {os.path.realpath(s.path): s.path for _, v in sets[1:] for s in v}
        warn_copies(list(scored.values()), [s.path for s in self.id_train], "ID test / OOD",
                    "ID training")


def not_utf8(path: Path, exc: UnicodeDecodeError) -> DatasetLayoutError:
    """The layout error for a text file that is not UTF-8 (a Latin-1 export), naming it."""
    return DatasetLayoutError(utf8_reason(path, exc))


def read_csv_rows(path: Path, delimiter: str = ",") -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and (line, row) pairs of a UTF-8 CSV file, a byte-order mark (Excel's "CSV
    UTF-8") left out of the first column's name; other encodings are a
    :class:`DatasetLayoutError` naming the file. ``line`` is the file's line where the row ends
    (blank lines, which the reader skips, counted), for messages that name it."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            rows = [(reader.line_num, row) for row in reader]
            return list(reader.fieldnames or []), rows
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def _read_csv(path: Path, required: Iterable[str], delimiter: str = ",") -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    header, rows = read_csv_rows(path, delimiter)
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetLayoutError(f"{path}: missing columns {missing}; found {header}")
    return rows


def _flag(value: str, column: str) -> int | None:
    """0 / 1 (also written 0.0 / 1.0), None for a blank cell; anything else raises."""
    value = (value or "").strip()
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number not in (0.0, 1.0):
        raise ValueError(f"{column} must be 0 or 1, got '{value}'")
    return int(number)


def read_isic_index(root: Path | str, index: str = "index.csv") -> list[IsicRecord]:
    """Records of ``root/index.csv``; image paths are resolved against ``root``. Refused,
    naming the line: a split other than train / val / test, flags other than 0 / 1, a blank
    artefacts_annotated, a blank ink / patches / ruler flag on an annotated row, an image_id
    listed twice, a blank path or one that is not a file (found here, not minutes into the
    extraction)."""
    root = Path(root)
    path = root / index
    records = []
    first_line: dict[str, int] = {}
    for i, row in _read_csv(path, INDEX_COLUMNS):
        try:
            image_id = row["image_id"].strip()
            if not image_id:
                raise ValueError("image_id is blank")
            if image_id in first_line:
                raise ValueError(f"image_id {image_id} is listed again (first on line {first_line[image_id]})")
            first_line[image_id] = i
            if row["split"] not in INDEX_SPLITS:
                raise ValueError(f"split must be one of {', '.join(INDEX_SPLITS)}, got '{row['split']}'")
            annotated = _flag(row["artefacts_annotated"], "artefacts_annotated")
            if annotated is None:
                raise ValueError("artefacts_annotated is blank")
            flags = {k: _flag(row.get(k, ""), k) for k in FLAG_COLUMNS}
            blank = [k for k in ANNOTATED_FLAGS if flags[k] is None]
            if annotated and blank:
                raise ValueError(f"annotated row with blank {', '.join(blank)}")
            rel = (row["path"] or "").strip()
            if not rel:
                raise ValueError("path is blank")
            if not (root / rel).is_file():
                where = "" if Path(rel).is_absolute() else f" ({root / rel})"
                raise ValueError(f"path {rel}: no such file{where}")
            records.append(IsicRecord(image_id, row["split"], root / rel,
                                      _flag(row["melanoma_isic2017"], "melanoma_isic2017"),
                                      bool(annotated), flags, i))
        except ValueError as exc:
            raise DatasetLayoutError(f"{path}, line {i}: {exc}") from None
    if not records:
        raise DatasetLayoutError(f"{path}: no rows")
    return records


def read_artefact_colours(path: Path | str) -> dict[str, tuple[set[str], set[str]]]:
    """image_id -> (ink colours, chart colours); 'none' gives an empty set. Colours outside
    :data:`INK_VOCABULARY` / :data:`CHART_VOCABULARY`, blanks, 'none' joined with a colour and
    repeated image ids are refused, naming the line."""
    path = Path(path)
    out: dict[str, tuple[set[str], set[str]]] = {}
    for i, r in _read_csv(path, ("image_id", "ink_colour", "chart_colour")):
        colours = []
        for column, vocabulary in (("ink_colour", INK_VOCABULARY), ("chart_colour", CHART_VOCABULARY)):
            names = [c.strip().lower() for c in r[column].split("+")]
            unknown = [c for c in names if c not in vocabulary]
            if unknown or ("none" in names and len(names) > 1):
                raise DatasetLayoutError(
                    f"{path}, line {i}: {column} '{r[column]}' is not 'none' or colours joined with "
                    f"'+' from {', '.join(sorted(vocabulary - {'none'}))}")
            colours.append(set(names) - {"none"})
        if r["image_id"] in out:
            raise DatasetLayoutError(f"{path}, line {i}: image_id {r['image_id']} is listed twice")
        out[r["image_id"]] = (colours[0], colours[1])
    return out


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
    ink = [r for r in ann if r.flags["ink"] == 1 and r.flags["patches"] != 1]
    charts = [r for r in ann if r.flags["patches"] == 1]
    colours = {}
    if any(s.endswith(("similar", "dissimilar")) for s in splits):
        colours_csv = Path(colours_csv or root / "labels" / "artefact_colours.csv")
        colours = read_artefact_colours(colours_csv)
        missing = [r for r in ink + charts if r.image_id not in colours]
        if missing:
            raise DatasetLayoutError(
                f"{colours_csv}: no row for {len(missing)} ink / chart image(s) of "
                f"{root / 'index.csv'} (first: {missing[0].image_id}, line {missing[0].line}); "
                f"give them their colours, or 'none'")

    def by_colour(rs: list[IsicRecord], which: int, allowed: frozenset) -> list[IsicRecord]:
        return [r for r in rs if colours[r.image_id][which] and colours[r.image_id][which] <= allowed]

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
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    ids = []
    for line in text.splitlines():
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
    """``<image_dir>/<id>.jpg|jpeg|png`` for each id; errors name the missing ids, and the
    files of an id with more than one (``ISIC_1.png`` and ``ISIC_1.jpg``: which is the image
    cannot be told)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    present: dict[str, list[Path]] = {}
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            present.setdefault(p.stem, []).append(p)
    missing = [i for i in ids if i not in present]
    if missing:
        raise DatasetLayoutError(f"{image_dir}: {len(missing)} of {len(ids)} listed images are missing "
                                 f"(first: {', '.join(missing[:5])})")
    twice = [i for i in ids if len(present[i]) > 1]
    if twice:
        raise DatasetLayoutError(f"{image_dir}: {len(twice)} listed id(s) have more than one image "
                                 f"file (first: {' and '.join(map(str, present[twice[0]]))}); "
                                 f"keep one file per id")
    return [present[i][0] for i in ids]


#: archive benign_malignant values; "indeterminate/<x>" takes its leaning x, plain
#: "indeterminate" has none and is refused
BENIGN_MALIGNANT = {"benign": 0, "malignant": 1, "indeterminate/benign": 0, "indeterminate/malignant": 1}
MALIGNANT_DIAGNOSES = frozenset({"melanoma", "basal cell carcinoma", "squamous cell carcinoma"})
BENIGN_DIAGNOSES = frozenset({
    "nevus", "seborrheic keratosis", "solar lentigo", "lentigo simplex", "lentigo nos",
    "lichenoid keratosis", "pigmented benign keratosis", "dermatofibroma", "vascular lesion",
    "angioma", "angiokeratoma", "cafe-au-lait macule", "scar", "verruca", "clear cell acanthoma",
    "neurofibroma"})


def read_archive_labels(metadata_csv: Path | str, ids: Iterable[str] | None = None) -> dict[str, int]:
    """isic_id -> 1 malignant / 0 benign, for the rows of ``ids`` (default: every row).

    ``benign_malignant`` is read where the row has one (:data:`BENIGN_MALIGNANT`:
    indeterminate/benign -> 0, indeterminate/malignant -> 1), else ``diagnosis``
    (:data:`MALIGNANT_DIAGNOSES` -> 1, :data:`BENIGN_DIAGNOSES` -> 0). A row with no
    label, plain ``indeterminate``, any other value or an id listed twice is refused,
    naming the line."""
    path = Path(metadata_csv)
    rows = _read_csv(path, ("isic_id",))
    columns = [c for c in ("benign_malignant", "diagnosis") if c in rows[0][1]] if rows else []
    if rows and not columns:
        raise DatasetLayoutError(f"{path}: needs a 'benign_malignant' or 'diagnosis' column; "
                                 f"found {list(rows[0][1])}")
    wanted = None if ids is None else set(ids)
    out: dict[str, int] = {}
    for i, r in rows:
        iid = r["isic_id"].strip()
        if wanted is not None and iid not in wanted:
            continue
        if iid in out:
            raise DatasetLayoutError(f"{path}, line {i}: {iid} is listed twice")
        bm = (r.get("benign_malignant") or "").strip().lower()
        dx = (r.get("diagnosis") or "").strip().lower()
        if bm:
            label = BENIGN_MALIGNANT.get(bm)
            known = f"one of {', '.join(BENIGN_MALIGNANT)}"
        elif dx:
            label = 1 if dx in MALIGNANT_DIAGNOSES else 0 if dx in BENIGN_DIAGNOSES else None
            known = "a known benign or malignant diagnosis; give the row a benign_malignant value"
        else:
            raise DatasetLayoutError(f"{path}, line {i}: {iid} has no label ({' and '.join(columns)} "
                                     f"blank)")
        if label is None:
            raise DatasetLayoutError(f"{path}, line {i}: {iid}: '{bm or dx}' is not {known}"
                                     + (" (plain 'indeterminate' has no benign / malignant leaning: "
                                        "leave the image out)" if bm == "indeterminate" else ""))
        out[iid] = label
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
    ids = read_id_list(id_list)
    labels_by_id = read_archive_labels(metadata_csv, ids)
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
