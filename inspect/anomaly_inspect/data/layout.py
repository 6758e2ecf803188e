"""Listing image files and the errors raised for bad dataset layouts.

Inputs are accounted for exactly once: every file is scheduled under one
canonical path (``..`` and symbolic links resolved), directory walks and
recursive globs visit each real directory once (so a symlink loop cannot make
them repeat or hang), and a folder's files are kept when they look like
images by extension *or* by their first bytes. A dangling symbolic link or one in a loop is
kept as well, and so is a FIFO or a device with an image extension (each becomes an error row
instead of vanishing), in a folder as in a glob. Hidden files and
folders below a listed folder are not images of the set (notebook checkpoints,
macOS ``._`` resource forks, temporaries being written), as for a shell glob. A named folder
that cannot be listed is an error; one below it is left out with a warning naming it.
What an earlier ``screen`` wrote beside its results, or an ``explain`` beside its
``explanations.json`` (:func:`without_earlier_outputs`), is no image of a set either: a folder
listing leaves it out, with a warning naming its folder.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import itertools
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..files import copies_across
from .explanations import listed_strips
from .image_io import is_image_file, looks_like_image
from .samples import Sample

log = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
RUN_JSON = "screen.json"
OUTPUT_SUBDIRS = ("overlays", "thumbs", "explain", "maps")  # what screen writes besides its files


class DatasetLayoutError(ValueError):
    """A dataset folder that does not have the expected structure."""


def canonical_path(path: Path | str) -> Path:
    """One spelling per file: absolute, ``..`` and symbolic links resolved.

    A dangling symbolic link keeps its own (absolute, normalised) path, so that
    its error names the link the user can see.
    """
    p = os.path.abspath(os.fspath(path))
    if os.path.islink(p) and not os.path.exists(p):
        return Path(os.path.realpath(os.path.dirname(p))) / os.path.basename(p)
    return Path(os.path.realpath(p))


def file_key(path: Path | str) -> tuple:
    """What makes two paths one file: for a file that exists, its device and inode (one
    ``stat``), so that a hard link is the file it links, as a symbolic link is; else (a dangling
    link, a file gone) its :func:`canonical_path`."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or st.st_ino == 0:  # no inode numbers on this file system: the path decides
        return ("path", canonical_path(path))
    return ("inode", st.st_dev, st.st_ino)


def nfc(name: str) -> str:
    """``name`` in Unicode normalisation form NFC: a name copied from macOS (decomposed, NFD:
    ``e`` + combining accent) and one typed elsewhere (composed, NFC: ``é``) look the same
    and pair as one. The one normaliser for pairing files by name."""
    return unicodedata.normalize("NFC", name)


def check_disjoint(train: list[Sample], test: list[Sample],
                   repeats: str = "refuse") -> tuple[list[Sample], list[Sample]]:
    """``train`` and ``test`` with each file once; a file in two roles is refused.

    Files are compared by :func:`file_key`, so a symbolic or hard link or another spelling
    does not hide one. A file that is both a training and a test image (the AUROC would be measured
    on what was fitted) or both a normal and an anomalous test image is refused. Within one role,
    two links to one file (a deduplicated dataset: ``rdfind``, ``jdupes -L``, ``cp -al``, a DVC
    hard-link cache) are kept once, the first, which is logged. The same file at one place brought
    in twice (:func:`_place`: named folders that overlap, a test folder inside another or a link
    to it) is refused with ``repeats="refuse"`` (folders the user named) and kept once with
    ``repeats="once"`` (a dataset's own split). A test image that is another file with a
    training image's bytes (a copy) is warned about (:func:`warn_copies`), not refused."""
    if repeats not in ("refuse", "once"):
        raise ValueError(f"repeats must be 'refuse' or 'once', got {repeats!r}")
    role: dict[tuple, tuple[str, Path]] = {}
    kept: dict[str, list[Sample]] = {"train": [], "test": []}
    again: list[str] = []
    for s in train + test:
        what = "a training image" if s.split == "train" else (
            "a normal test image" if s.label == 0 else "an anomalous test image")
        key = file_key(s.path)
        if key in role:
            first, where = role[key]
            same = "" if os.path.abspath(where) == os.path.abspath(s.path) else f" (the same file as {where})"
            if first != what:
                raise DatasetLayoutError(f"{s.path}: both {first} and {what}{same}; the folders "
                                         f"must not overlap")
            if repeats == "refuse" and _place(where) == _place(s.path):
                raise DatasetLayoutError(f"{s.path}: {what} twice{same}; the folders must not "
                                         f"overlap")
            again.append(f"{s.path} (= {where})")
            continue
        role[key] = (what, s.path)
        kept["train" if s.split == "train" else "test"].append(s)
    log_counted_once(again, "within a split")
    warn_copies([s.path for s in kept["test"]], [s.path for s in kept["train"]], "test",
                "training")
    return kept["train"], kept["test"]


def warn_copies(scored: Sequence[Path], fitted: Sequence[Path], scored_what: str,
                fitted_what: str) -> None:
    """Warn, in one line with the count and two examples, of the images of ``scored`` that are
    byte-for-byte copies of images of ``fitted`` (:func:`~..files.copies_across`: only files of
    a size on both sides are hashed): the AUROC is then partly measured on what was fitted. Not
    refused: a dataset may hold copies by chance; a link to one file is refused before this."""
    pairs = copies_across(scored, fitted)
    if pairs:
        log.warning("%d %s image(s) are byte-for-byte copies of %s images, so the AUROC is partly "
                    "measured on images the model was fitted on: %s%s", len(pairs), scored_what,
                    fitted_what, "; ".join(f"{scored[i]} = {fitted[j]}" for i, j in pairs[:2]),
                    "; ..." if len(pairs) > 2 else "")


def log_counted_once(again: list[str], where: str) -> None:
    """Warn of the files ``again`` (each named with the one kept: ``"x (= y)"``) that were
    brought in twice ``where`` as links to one file and counted once, up to five named: the
    one wording for :func:`check_disjoint` (``evaluate``'s splits) and :func:`expand_inputs`
    (``fit``'s inputs)."""
    if again:
        log.warning("%d file(s) brought in twice %s (links to one file) counted once: %s%s",
                    len(again), where, ", ".join(again[:5]), " ..." if len(again) > 5 else "")


def _place(path: Path | str) -> Path:
    """Where ``path`` is listed: its folder resolved (``..`` and links to folders), its own name
    kept. One place reached twice is one folder listed twice; two places holding one file (a
    hard link, a symbolic link to a file) are two entries of a folder."""
    p = os.path.abspath(os.fspath(path))
    return Path(os.path.realpath(os.path.dirname(p))) / os.path.basename(p)


def display_path(path: Path | str) -> str:
    """``path`` as valid UTF-8 text: bytes of a non-UTF-8 file name escaped as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _entries(d: Path | str, named: bool, seen: set[tuple[int, int]]) -> list[os.DirEntry] | None:
    """The entries of folder ``d`` by name, or None where it was entered before (a symlink loop
    or a second link to it). One that cannot be listed is an error where the user ``named``
    it, else a warning naming it (its images are left out, not silently)."""
    try:
        st = os.stat(d)
        if (st.st_dev, st.st_ino) in seen:
            return None
        seen.add((st.st_dev, st.st_ino))
        return sorted(os.scandir(d), key=lambda e: e.name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if named:
            raise type(exc)(f"{display_path(d)}: cannot list this folder ({reason})") from None
        log.warning("%s: cannot list this folder (%s); the images in it are left out",
                    display_path(d), reason)
        return None


def _walk_files(folder: Path, recursive: bool) -> Iterator[Path]:
    """Every entry but a folder under ``folder`` (files, dangling links, links in a loop, FIFOs,
    ...: :func:`_is_candidate` picks the images, as for a glob's matches), hidden names (a
    leading dot) left out, as a shell glob leaves them out; each real directory is entered once."""
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        d = stack.pop()
        entries = _entries(d, d is folder, seen)
        if entries is None:
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):  # hidden: .ipynb_checkpoints, macOS ._x.png, temporaries
                continue
            try:
                is_dir = e.is_dir()  # follows links; loops of folders are cut by ``seen``
            except OSError:  # e.g. a link in a loop: its read gives the reason
                is_dir = False
            if is_dir:
                subdirs.append(Path(e.path))
            else:
                yield Path(e.path)
        if recursive:
            stack.extend(reversed(subdirs))


def _is_candidate(path: Path) -> bool:
    if is_image_file(path):
        return True
    if path.is_symlink() and not path.exists():  # dangling: an error row, not silence
        return True
    return looks_like_image(path)


def _by_name(path: str) -> tuple[list[str], list[str]]:
    """How paths compare: part by part as ``Path`` objects sort, each name in NFC first
    (:func:`nfc`: a copy from macOS is NFD, so ``é`` would sort before ``f`` there and after
    ``z`` elsewhere), then as it is (one name in two Unicode forms)."""
    parts = path.split(os.sep)
    return [nfc(part) for part in parts], parts


def listing_key(path: Path | str, real_folder: Callable[[str], str] = os.path.realpath
                ) -> tuple[tuple[list[str], list[str]], list[str]]:
    """Where ``path`` comes in :func:`listing_order`: its :func:`canonical_path` compared by
    :func:`_by_name`, then (two links to one file) its :func:`_place`. So the order does not
    depend on how a folder was named (relative, absolute, through ``..`` or a link: ``fit``
    lists canonical paths, ``evaluate`` the paths as named) nor on the Unicode form of the
    names; a folder without links and with ASCII names keeps the order its paths sort in.
    ``real_folder`` resolves a folder (``listing_order`` passes a cached
    :func:`os.path.realpath`: once per folder)."""
    a = os.path.abspath(os.fspath(path))
    place = os.path.join(real_folder(os.path.dirname(a)), os.path.basename(a))
    real = os.fspath(canonical_path(a)) if os.path.islink(a) else place
    return _by_name(real), place.split(os.sep)


def listing_order(paths: Iterable[Path]) -> list[Path]:
    """``paths`` (as given) in the one order of training images, :func:`listing_key`'s: that
    of every fit (local, distributed, ``evaluate``'s folders), whatever order and spelling the
    images were named in, so the seeded draws (calibration hold-out, coreset) depend on the
    set of images only; a single folder's images keep their listing order (:func:`list_images`)
    where the folder holds no links to files elsewhere."""
    real_folder = functools.cache(os.path.realpath)
    return sorted(paths, key=lambda p: listing_key(p, real_folder))


def list_images(folder: Path | str, recursive: bool = True, *,
                earlier_outputs: bool = False) -> list[Path]:
    """Image files under ``folder`` (by extension or content) by name (:func:`_by_name`, as
    found: a link by its own name); raises if the folder is missing. Those an earlier screen
    or explain wrote are left out (:func:`without_earlier_outputs`) unless ``earlier_outputs``
    (:func:`expand_inputs`, whose callers leave them out once its ``exclude`` is applied)."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    found = sorted((p for p in _walk_files(folder, recursive) if _is_candidate(p)),
                   key=lambda p: _by_name(os.fspath(p)))
    return found if earlier_outputs else without_earlier_outputs(found)


def holds_screen_run(folder: Path) -> bool:
    """Whether ``folder`` holds a screen's records: a ``results.csv`` beside its
    ``screen.json``."""
    return (folder / RUN_JSON).is_file() and (folder / RESULTS_CSV).is_file()


def is_screen_output_folder(folder: Path) -> bool:
    """Whether ``folder`` is one a screen wrote its images into (``overlays/``, ``thumbs/``,
    ``explain/``, ``maps/``) beside its records (:func:`holds_screen_run`); a user's folder of
    such a name elsewhere is not."""
    return folder.name in OUTPUT_SUBDIRS and holds_screen_run(folder.parent)


def without_earlier_outputs(paths: Sequence[Path], keep: Iterable[Path | str] = (),
                            written: Callable[[Path], set[str]] = listed_strips) -> list[Path]:
    """``paths`` less the images an earlier run wrote: those in (or below) a folder a screen
    wrote (:func:`is_screen_output_folder`), and the names ``written(folder)`` gives for their
    folder (by default explain's strips, which it writes straight into its ``--out`` folder and
    lists in its ``explanations.json`` and journal: :func:`.explanations.listed_strips`); a
    path in ``keep`` (a file the user named) stays. The one rule for every listing (a dataset's
    folders, ``fit``'s and ``screen``'s inputs): without it a results folder inside an image
    folder is read as images, run after run. One warning names the folders left out."""
    kept = {os.path.abspath(k) for k in keep}
    screen_folder: dict[Path, bool] = {}
    listed: dict[Path, set[str]] = {}
    left_out: dict[Path, int] = {}

    def written_in(p: Path) -> Path | None:
        for d in p.parents:
            if d not in screen_folder:
                screen_folder[d] = is_screen_output_folder(d)
            if screen_folder[d]:
                return d
        if p.parent not in listed:
            listed[p.parent] = written(p.parent)
        return p.parent if p.name in listed[p.parent] else None

    out = []
    for p in paths:
        a = os.path.abspath(p)
        folder = None if a in kept else written_in(Path(a))
        if folder is None:
            out.append(p)
        else:
            left_out[folder] = left_out.get(folder, 0) + 1
    if left_out:
        named = [f"{display_path(d)} ({n})" for d, n in list(left_out.items())[:5]]
        log.warning("%d image(s) an earlier screen or explain run wrote left out (not images "
                    "of the set): %s%s", sum(left_out.values()), ", ".join(named),
                    " ..." if len(left_out) > 5 else "")
    return out


def _glob_root(pattern: str) -> tuple[str, list[str]]:
    """Split a glob into its literal leading folder and the remaining pattern parts."""
    parts = pattern.split(os.sep)
    root: list[str] = []
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return os.sep.join(root) or (os.sep if pattern.startswith(os.sep) else "."), parts[i:]
        root.append(part)
    return os.sep.join(root), []


def _part_regex(part: str) -> re.Pattern[str]:
    rx = fnmatch.translate(part)
    if not part.startswith("."):  # like glob: '*' does not match hidden names
        rx = r"(?!\.)" + rx
    return re.compile(rx, re.DOTALL)


def _glob(pattern: str) -> list[Path]:
    """Files and folders matching ``pattern`` (``**`` = any depth), walking no symlink loop."""
    root, parts = _glob_root(pattern)
    if not os.path.isdir(root):
        return []
    recursive = "**" in parts
    regexes = [None if p == "**" else _part_regex(p) for p in parts]

    def match(rel: list[str], k: int = 0, j: int = 0) -> bool:
        if k == len(regexes):
            return j == len(rel)
        if regexes[k] is None:  # '**': zero or more non-hidden folders
            return any(match(rel, k + 1, j2) for j2 in range(j, len(rel) + 1)
                       if all(not r.startswith(".") for r in rel[j:j2]))
        return j < len(rel) and bool(regexes[k].match(rel[j])) and match(rel, k + 1, j + 1)

    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [(root, [])]
    depth_max = None if recursive else len(parts)
    while stack:
        d, rel = stack.pop()
        entries = _entries(d, not rel, seen)
        if entries is None:
            continue
        for e in entries:
            r = [*rel, e.name]
            if match(r):
                out.append(Path(os.path.normpath(e.path)) if root != "." else Path(e.path[2:]))
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir and (depth_max is None or len(r) < depth_max):
                stack.append((e.path, r))
    return sorted(out)


TWINS = ("keep", "once")


def expand_inputs(inputs: list[str | Path], recursive: bool = True,
                  exclude: Sequence[str | Path] = (), twins: str = "keep") -> list[Path]:
    """Resolve a mix of files, folders and glob patterns into canonical image paths, each once.

    Explicitly named files are kept even if their extension is unusual (and
    dangling links named on the command line too), so that a bad file becomes
    a per-image error instead of vanishing or stopping the run. Files that a
    folder or glob brings in from under an ``exclude`` folder that lies strictly
    inside that folder (or the glob's fixed leading folders) are left out: a
    command's own output, e.g. ``screen``'s overlays when its results folder lies
    inside the input. An input inside the ``exclude`` folder is read as usual.
    Paths are compared as resolved and as spelled (an ``exclude`` folder may be a
    link to elsewhere). One path brought in twice (folders that overlap) is kept once silently.
    ``twins``: ``"keep"`` (screening: ``screen``, ``explain``, ``Model.score``) keeps each
    canonical path, so two hard links to one file are two rows under their own names;
    ``"once"`` (training inputs: ``fit``, its calibration images, ``tune``) counts files once
    by :func:`file_key`, as ``evaluate`` counts them (:func:`check_disjoint`): of two hard
    links to one file the one first in :func:`listing_order` is kept (whatever order the
    inputs were named in) and the other is named in a warning. What an earlier screen wrote is
    kept here: ``screening.model.input_images`` leaves it out after ``exclude``
    (:func:`without_earlier_outputs`), sparing a warning for the results folder being written.
    """
    if twins not in TWINS:
        raise ValueError(f"twins={twins!r}: one of {', '.join(map(repr, TWINS))}")
    out: list[Path] = []
    found: dict[object, tuple[int, list[Path]]] = {}  # file -> its place in out, its paths
    identity = file_key if twins == "once" else (lambda c: c)
    skip = [(canonical_path(Path(e)), Path(os.path.abspath(e))) for e in exclude]

    def inside(f: Path, e: Path, r: Path) -> bool:
        return r in e.parents and (f == e or e in f.parents)

    def add(p: Path, root: Path | None = None) -> None:
        c = canonical_path(p)
        if root is not None:
            rc, ra, fa = canonical_path(root), Path(os.path.abspath(root)), Path(os.path.abspath(p))
            if any(inside(c, ec, rc) or inside(fa, ea, ra) for ec, ea in skip):
                return
        key = identity(c)
        if key not in found:
            found[key] = len(out), [c]
            out.append(c)
        elif c not in found[key][1]:
            found[key][1].append(c)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in list_images(p, recursive=recursive, earlier_outputs=True):
                add(f, p)
        elif os.path.lexists(p):
            add(p)
        elif any(ch in str(item) for ch in "*?["):
            matches = _glob(str(item))
            if not matches:
                raise FileNotFoundError(f"{item}: glob pattern matched no files")
            fixed = Path(*itertools.takewhile(lambda part: not any(ch in part for ch in "*?["),
                                              p.parts))
            for m in matches:
                if m.is_dir():  # the glob's fixed part is the root: m may be an excluded folder
                    for f in list_images(m, recursive=recursive, earlier_outputs=True):
                        add(f, fixed)
                elif _is_candidate(m):
                    add(m, fixed)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    again = []
    for at, paths in found.values():
        if len(paths) > 1:
            out[at] = first = listing_order(paths)[0]
            again += [f"{p} (= {first})" for p in paths if p != first]
    log_counted_once(again, "among the inputs")
    return out


def resolve_category_dirs(roots: list[str], categories: list[str]) -> dict[str, Path]:
    """Category -> its folder, from plain roots (searched in order) and CATEGORY=DIR entries.
    Two categories in one folder are refused: the same images under two names would leak one
    name's injected training anomalies into the other's test set. A CATEGORY=DIR of a category
    not in ``categories`` is refused too (a typo would leave its folder unread, silently)."""
    mapping: dict[str, Path] = {}
    plain: list[Path] = []
    for entry in roots:
        if "=" in entry:
            cat, d = entry.split("=", 1)
            if cat.strip() not in categories:
                close = difflib.get_close_matches(cat.strip(), categories, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"{entry}: category '{cat.strip()}' is not in the categories asked "
                                 f"for ({', '.join(categories)}), so its folder would not be read{hint}")
            mapping[cat.strip()] = Path(d)
        else:
            plain.append(Path(entry))
    for r in plain:
        if not r.is_dir():
            raise FileNotFoundError(f"{r}: root folder not found")
    out = {}
    for c in categories:
        if c in mapping:
            out[c] = mapping[c]
            continue
        found = [r / c for r in plain if (r / c / "train").is_dir()]
        found += [r for r in plain if r.name == c and (r / "train").is_dir()]
        if not found:
            raise DatasetLayoutError(
                f"category '{c}': no {c}/train/ under {', '.join(map(str, plain)) or 'any root'}")
        out[c] = found[0]
    seen: dict[Path, str] = {}
    for c, d in out.items():
        if (other := seen.setdefault(d.resolve(), c)) != c:
            raise ValueError(f"categories '{other}' and '{c}' are one folder, {d.resolve()}: "
                             f"give each category its own folder")
    return out
