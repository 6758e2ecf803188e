"""Reading the records an ``explain --out DIR`` run leaves in DIR: ``explanations.json`` and
the journal of a run in progress (or killed). Here, in the data layer, because explain writes
its strips straight into DIR (no folder of its own): every listing of images
(:func:`.layout.without_earlier_outputs`) needs the strips these records name, so that an
explain run into a dataset folder adds no images to it. ``screening.explain`` writes the
records and reads them through this module.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

EXPLANATIONS_JSON = "explanations.json"
#: a run's finished batches, one JSON line each, until they are folded into explanations.json
JOURNAL = "explanations.journal.jsonl"


def entry_key(entry: dict) -> str:
    """The image path (as the file system spells it) an entry of ``explanations.json`` is
    for, as results.csv's rows are keyed: its percent-encoded ``raw_path`` decoded, else its
    ``path`` (entries written before ``raw_path`` existed, and UTF-8 names); two names that
    display alike are two images."""
    raw = entry.get("raw_path") or ""
    return os.fsdecode(urllib.parse.unquote_to_bytes(raw)) if raw else entry["path"]


def replaced_by(later: Iterable[dict]) -> Callable[[dict], bool]:
    """Whether an entry is for an image one of ``later`` is for: by :func:`entry_key`, or,
    for an entry from before ``raw_path``, by its text."""
    keys = {entry_key(d) for d in later}
    shown = {d["path"] for d in later}
    return lambda d: entry_key(d) in keys or ("raw_path" not in d and d["path"] in shown)


def merged_entries(earlier: list[dict], later) -> list[dict]:
    """``earlier`` entries less the images ``later`` has, then ``later``'s (the last entry of
    an image wins, in the place of its first); images by :func:`entry_key`."""
    newer: dict[str, dict] = {}
    for d in later:
        newer[entry_key(d)] = d
    replaced = replaced_by(newer.values())
    return [d for d in earlier if not replaced(d)] + list(newer.values())


def read_explanations(folder: Path | str) -> list[dict]:
    """The entries of ``folder``'s ``explanations.json`` as explain leaves them: with those a
    run's journal holds (a run in progress, or one killed) folded in. None where neither
    exists; a file that is not ours or is damaged is refused (ValueError naming it)."""
    folder = Path(folder)
    journal = _journal_entries(folder / JOURNAL)  # before the file: a run folding in between
    return merged_entries(_earlier_explanations(folder / EXPLANATIONS_JSON), journal)  # is seen whole


def _journal_entries(path: Path) -> list[dict]:
    """The entries of a journal's lines; an unterminated last line that does not parse is the
    batch a killed run was writing, and is dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: damaged explanations journal ({exc}); remove it (its "
                         f"entries are lost, their strips stay) or give another --out "
                         f"folder") from None
    lines = text.split("\n")
    out: list[dict] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            batch = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # cut off by a kill: the batch in flight
                log.warning("%s: dropped its cut-off last line (a batch a stopped run was "
                            "writing)", path)
                break
            batch, err = None, exc
        else:
            err = "not a list of entries with a path"
        if not isinstance(batch, list) or not all(isinstance(d, dict) and "path" in d
                                                   for d in batch):
            raise ValueError(f"{path}: line {n}: damaged explanations journal ({err}); remove "
                             f"it (its entries are lost, their strips stay) or give another "
                             f"--out folder")
        out.extend(batch)
    return out


def _earlier_explanations(path: Path) -> list[dict]:
    """The entries an earlier run wrote to ``path`` (none if it does not exist); anything else
    there is refused before any work, so that no file of another kind is replaced."""
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not an explanations file of this tool ({exc}); give another "
                         f"--out folder or remove it") from None
    if not isinstance(doc, list) or not all(isinstance(d, dict) and "path" in d for d in doc):
        raise ValueError(f"{path}: not an explanations file of this tool (a list of entries "
                         f"with a path); give another --out folder or remove it")
    return doc


def listed_strips(folder: Path) -> set[str]:
    """The strip names the ``explanations.json`` in ``folder`` (and its journal) lists (none
    where there is no such file, or one that is not ours): the images an explain run wrote
    there, which no listing reads as images of a set."""
    try:
        doc = read_explanations(folder)
    except ValueError:
        return set()
    return {d["strip"] for d in doc if isinstance(d.get("strip"), str)}
