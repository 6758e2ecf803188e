"""Optional ground-truth labels for a screening report (ROC / AUROC only; never for fitting).

Two sources: a CSV with ``path,label`` columns (label 0/1, or normal/good/ok vs
anomalous/defect/bad/ng), or the MVTec layout, where ``.../test/good/x.png`` is
normal and ``.../test/<defect>/x.png`` (or deeper, ``.../test/<defect>/<sub>/x.png``) is
anomalous, as the MVTec adapter labels them.
"""

from __future__ import annotations

import csv
import logging
import os
from itertools import pairwise
from pathlib import Path

from ..data.layout import DatasetLayoutError, display_path, nfc
from ..data.mvtec import type_folder_label
from ..files import not_utf8

log = logging.getLogger(__name__)

NORMAL_WORDS = {"0", "normal", "good", "ok", "pass", "negative", "false"}
ANOMALOUS_WORDS = {"1", "anomalous", "anomaly", "defect", "defective", "bad", "ng", "fail",
                   "positive", "true"}


def _key(path: Path | str) -> str:
    """How a CSV row and a screened image pair: the resolved path, in one Unicode form (a name
    copied from macOS pairs with one typed in the CSV, as masks pair with their images)."""
    return nfc(os.path.normcase(os.path.realpath(str(path))))


def parse_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in NORMAL_WORDS:
        return 0
    if v in ANOMALOUS_WORDS:
        return 1
    raise ValueError(f"{where}: label {value!r} is neither normal (0) nor anomalous (1)")


def load_labels_csv(path: Path | str) -> dict[str, int]:
    """{absolute path: label}; relative paths are taken relative to the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels CSV not found")
    out: dict[str, int] = {}
    first: dict[str, int] = {}  # key: the CSV line that labelled it
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "path" not in cols or "label" not in cols:
                raise ValueError(f"{path}: labels CSV needs 'path' and 'label' columns, "
                                 f"found {reader.fieldnames}")
            for row in reader:
                line = reader.line_num  # the file's line (blank lines, which it skips, counted)
                raw = (row[cols["path"]] or "").strip()
                if not raw:
                    raise ValueError(f"{path}:{line}: empty path")
                p = Path(raw)
                key = _key(p if p.is_absolute() else path.parent / p)
                label = parse_label(row[cols["label"]] or "", f"{path}:{line}")
                if key in out and out[key] != label:  # the same image, maybe spelt another way
                    raise ValueError(f"{path}:{line}: {raw} is labelled {label}, but line "
                                     f"{first[key]} labels the same image {out[key]}")
                out[key] = label
                first.setdefault(key, line)
    except UnicodeDecodeError as exc:
        raise ValueError(not_utf8(path, exc, "labels CSV")) from None
    if not out:
        raise ValueError(f"{path}: labels CSV has no rows")
    return out


def mvtec_label(path: Path | str) -> int | None:
    """The MVTec adapter's label of ``path``: 0 under test/good/, 1 under test/<defect>/ (at
    any depth below the type folder, as the adapter reads nested images), None when the path
    is not in that layout (no type folder between it and a ``test`` folder, or a hidden one).
    The type is the folder right below the nearest such ``test`` ancestor; a case variant of
    good is refused as the adapter refuses it (:func:`..data.mvtec.type_folder_label`)."""
    p = Path(path)
    for below, folder in pairwise(p.parents):
        if folder.name == "test":
            if below.name.startswith("."):  # hidden: the adapter reads no such folder
                return None
            return type_folder_label(folder, below.name)
    return None


def resolve_labels(paths: list[str], spec: str | None) -> tuple[dict[str, int], str]:
    """Labels for ``paths`` and where they came from ("" = none).

    ``spec``: a CSV path, ``"mvtec"``, ``"none"``, or ``None`` = MVTec layout if
    every path follows it and both classes occur. A CSV or ``"mvtec"`` that labels none of
    ``paths`` is refused (a report would silently lack its ROC).
    """
    if spec == "none" or not paths:
        return {}, ""
    if spec not in (None, "mvtec"):
        table = load_labels_csv(spec)
        found = {p: table[_key(p)] for p in paths if _key(p) in table}
        if not found:
            raise ValueError(
                f"{spec}: the labels CSV names none of the {len(paths)} screened images (its "
                f"relative paths are taken from the CSV's folder, {Path(spec).parent.resolve()}; "
                f"e.g. {display_path(paths[0])} is not in it)")
        return found, f"labels CSV {spec} ({len(found)} of {len(paths)} images labelled)"
    found = {}
    for p in paths:
        try:
            lab = mvtec_label(p)
        except DatasetLayoutError as exc:
            if spec == "mvtec":
                raise
            log.warning("%s; the report has no labels (give --labels a CSV)", exc)
            return {}, ""
        if lab is not None:
            found[p] = lab
    if spec is None and (len(found) < len(paths) or len(set(found.values())) < 2):
        return {}, ""
    if spec == "mvtec" and not found:
        raise ValueError("labels='mvtec': no screened image lies in a test/<type>/ folder (each "
                         "image's resolved path is read: symbolic links into a flat folder carry "
                         "no label; give a labels CSV)")
    return found, f"MVTec layout (test/good = normal; {len(found)} of {len(paths)} images labelled)"
