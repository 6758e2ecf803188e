"""Streaming screening: images -> ``results.csv`` (+ thumbnails, overlays, maps, ``report.html``).

Memory is bounded whatever the number of images: images are decoded, scored
and written batch by batch, and only one batch of thumbnails / overlays is in
flight in the writer thread. ``results.csv`` is appended and flushed after
every batch, so an interrupted run loses at most one batch and a re-run skips
every image already scored (unless ``rescore``, which starts ``results.csv`` over and
removes the thumbnails, overlays, strips and maps its earlier rows named). Images that failed before
are retried. A run that resumes with a different model is refused, and so is a
second run while another one writes to the same folder (see :mod:`.lock`).

``results.csv`` is always valid UTF-8: a file name that is not is written
with its undecodable bytes escaped (``\xff``) in ``path``, and its raw bytes,
percent-encoded, in ``raw_path`` (empty for every other file). ``overlay``,
``explain`` and ``map`` name the heatmap overlay, the explanation strip and the anomaly
map (``.npy``) written for the row (empty: none); the report shows the first two.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import logging
import math
import os
import re
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..choices import OVERLAY_CHOICES, check_instance
from ..data.explanations import entry_key as row_key  # results rows are keyed alike
from ..data.folder import path_list
from ..data.image_io import image_size, read_image
from ..data.layout import display_path
from ..files import make_folder, replacing, reworded, write_json
from ..pipeline.engine import Engine, check_engine, start_engine, warm_up_seconds
from ..progress import Progress
from ..scorers.params import check_number
from .explain import OUTPUTS as EXPLAIN_OUTPUTS
from .explain import listed_strips
from .lock import LOCK_NAME, OutputLock
from .model import (
    OUTPUT_SUBDIRS,
    RESULTS_CSV,
    RUN_JSON,
    Model,
    ScoredImage,
    input_images,
)
from .model_dir import is_model_dir
from .overlays import denormalise, fit_within, heatmap_overlay, image_map, write_rgb

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "score", "p_value", "decision", "error", "overlay", "raw_path", "explain",
               "map")
# earlier layouts (before map; before explain too; before raw_path too): read on resume, rewritten
LEGACY_CSV_COLUMNS = (CSV_COLUMNS[:-1], CSV_COLUMNS[:-2], CSV_COLUMNS[:-3])
OVERLAY_SIDE = 768  # longer side of an overlay image at most
MAP_SIDE = 4096  # longer side of a written anomaly map at most (a 100 MP image's would be 400 MB)


@dataclass
class ScreenSummary:
    """What a screening run did. ``exit_code`` is 1 when any image of this run failed.

    ``seconds``: this run's time for its new images (listing, scoring, writing their rows;
    not the report), less ``engine_start`` (the engine's start-up, Ray's ``ray.init``),
    ``engine_warm_up`` (the wait for the engine's workers to start and load the model before
    the new images' first batch: :func:`~..pipeline.engine.warm_up_seconds`; the local engine's
    model is loaded before, by the caller) and ``resumed_seconds`` (the scoring pass that writes
    the strips, maps and overlays resumed rows lack, its own warm-up included), which are timed
    apart: none of them scores this run's images."""

    out_dir: Path
    results_csv: Path
    report_html: Path | None
    n_inputs: int
    n_scored: int  # scored in this run
    n_resumed: int  # already in results.csv, skipped
    n_flagged: int
    n_errors: int
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    engine_start: float = 0.0
    resumed_seconds: float = 0.0
    engine_warm_up: float = 0.0

    @property
    def images_per_second(self) -> float:
        """The scored images of this run per second of ``seconds``; the unreadable files are
        no screened images (``n_errors``, apart, as bench-scale's rates leave them out)."""
        return self.n_scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.n_errors else 0


def raw_path_field(path: str) -> str:
    """The ``raw_path`` column: percent-encoded bytes when the name is not UTF-8, else empty."""
    return "" if display_path(path) == path else urllib.parse.quote(os.fsencode(path), safe="/")


def image_key(path: str) -> str:
    """A file-name-safe, collision-free name for an input path (for thumbnails and overlays):
    a readable stem and a hash of the path's bytes as the file system has them (two names
    that display alike, e.g. a raw byte 0xE9 and the text "\\xe9", get two keys; for a
    UTF-8 name the bytes are its text's). Callers pass the raw path (:func:`row_key`)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(display_path(path)).stem)[:40].strip("_") or "image"
    return f"{stem}_{hashlib.sha1(os.fsencode(path)).hexdigest()[:10]}"


OUTPUTS = (RESULTS_CSV, RUN_JSON, "report.html", LOCK_NAME, *OUTPUT_SUBDIRS)


#: the name of a file screen or explain writes per image (:func:`image_key`, then a suffix)
_PER_IMAGE = re.compile(r".*_[0-9a-f]{10}(_overlay)?\.(jpg|json|npy)")


def check_out_dir(out_dir: Path, writes: str) -> None:
    """Refuse a screen's or explain's ``out_dir`` that is a model directory: what the command
    ``writes`` (its files, named in the message) would lie among the model's. Refuse too a
    symbolic link in it where screen or explain writes a file of its own (:func:`_planted_link`):
    the file would be written where the link points (a results folder another account
    prepared could so have any file of this user's replaced)."""
    if is_model_dir(out_dir):
        raise ValueError(f"{out_dir}: is a model directory; choose another out_dir ({writes} "
                         f"into it)")
    link = _planted_link(out_dir)
    if link is not None:
        raise ValueError(f"{link}: is a symbolic link; this command writes its own files in "
                         f"out_dir, not through links; remove it or choose another out_dir")


def _planted_link(out_dir: Path) -> Path | None:
    """A symbolic link in ``out_dir`` named as a file or folder screen or explain writes there
    (:data:`OUTPUTS`, explain's, the per-image files), or in one of screen's subfolders
    (:data:`OUTPUT_SUBDIRS`) named as a per-image file; None where there is none. ``out_dir``
    itself may be a link: the user named it."""
    own = {*OUTPUTS, *EXPLAIN_OUTPUTS}
    for folder in (out_dir, *(out_dir / d for d in OUTPUT_SUBDIRS)):
        try:
            entries = list(os.scandir(folder))
        except OSError:  # none there (yet), or no folder: nothing is written through it
            continue
        for e in entries:
            if e.is_symlink() and ((folder == out_dir and e.name in own)
                                   or _PER_IMAGE.fullmatch(e.name)):
                return Path(e.path)
    return None


def thumb_relpath(path: str, overlay: bool = False) -> str:
    return f"thumbs/{image_key(path)}{'_overlay' if overlay else ''}.jpg"


def overlay_relpath(path: str) -> str:
    return f"overlays/{image_key(path)}.jpg"


def map_relpath(path: str) -> str:
    """Where ``screen --maps`` writes an image's anomaly map."""
    return f"maps/{image_key(path)}.npy"


def explain_relpath(path: str, suffix: str = ".jpg") -> str:
    """Where ``screen --explain`` writes an image's strip (``.jpg``) and explanation (``.json``)."""
    return f"explain/{image_key(path)}{suffix}"


def model_identity(model: Model) -> str:
    """The identity ``screen.json`` records: a SHA-256 of the model's description
    (``model.json``'s content, keys sorted), not of the file's bytes."""
    blob = json.dumps(model.info.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def read_results(csv_path: Path) -> tuple[list[dict[str, str]], int]:
    """Complete rows of ``results.csv`` and how many lines were malformed (e.g. a cut-off last
    line); a zero-byte file has none. A complete row screen could not have written
    (:func:`_check_row`) is refused naming its line."""
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return [], 0
    rows, lines, bad = [], [], 0
    # older versions wrote undecodable file names' raw bytes: read back as the file system's
    # names, so that each row gets its raw_path (and its key) as the current layout writes it
    with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        columns = tuple(reader.fieldnames or ())
        if columns != CSV_COLUMNS and columns not in LEGACY_CSV_COLUMNS:
            raise ValueError(f"{csv_path}: not a results file of this tool (columns "
                             f"{reader.fieldnames}); choose another out_dir or pass rescore=True")
        last_ok = False
        for row in reader:
            last_ok = not (None in row or any(row.get(c) is None for c in columns))
            if last_ok:
                rows.append(_current_layout(row))
                lines.append(reader.line_num)
            else:
                bad += 1
    with open(csv_path, "rb") as fh:
        fh.seek(max(0, csv_path.stat().st_size - 1))
        unterminated = fh.read(1) not in (b"\n", b"")
    if unterminated and last_ok:  # the last line was cut off, even if all its fields parse
        rows.pop()
        bad += 1
    for row, line in zip(rows, lines, strict=False):
        _check_row(row, f"{csv_path}:{line}")
    return rows, bad


def _current_layout(row: dict[str, str]) -> dict[str, str]:
    """A row as this version writes it: every text valid UTF-8, and a name that is not in
    ``raw_path`` (older layouts wrote its raw bytes into ``path``)."""
    row = {"raw_path": "", "explain": "", "map": "", **{k: display_path(v) if k != "path" else v
                                            for k, v in row.items()}}
    if not row["raw_path"]:
        row["raw_path"], row["path"] = raw_path_field(row["path"]), display_path(row["path"])
    return row


DECISIONS = ("normal", "anomalous", "error")


def _check_row(row: dict[str, str], where: str) -> None:
    """Refuse a row screen could not have written (the report would fail on it, late): a score
    or p-value that is not a number, an unknown decision, an error row without its error or
    another row with one. A row whose values parse is taken as written: its score is not
    checked against its decision (the CSV's rounding of older files would make that fragile)."""
    fix = "correct or delete that row, or pass rescore=True"
    if row["decision"] not in DECISIONS:
        raise ValueError(f"{where}: decision {row['decision']!r} is none of "
                         f"{', '.join(DECISIONS)}; {fix}")
    if (row["decision"] == "error") != bool(row["error"]):
        raise ValueError(f"{where}: decision {row['decision']!r} with error {row['error']!r} "
                         f"(an error row, and only one, names its error); {fix}")
    for col in ("score", "p_value"):
        if row[col] == "":
            continue  # no p-value without calibration scores; a NaN score is written empty
        try:
            float(row[col])
        except ValueError:
            raise ValueError(f"{where}: {col} {row[col]!r} is not a number; {fix}") from None


def _write_rows_atomic(csv_path: Path, rows: list[dict[str, str]]) -> None:
    with replacing(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _fmt(v: float) -> str:
    """The shortest text that reads back as the same float64, so ``score > threshold`` (the
    threshold as screen.json keeps it) holds on the written value as it did for the decision,
    also for a score equal to the threshold."""
    return "" if math.isnan(v) else repr(float(v))


def screen(
    model: Model,
    inputs: Sequence[Path | str] | Path | str,
    out_dir: Path | str,
    rescore: bool = False,
    overlays: str = "flagged",
    labels: str | None = None,
    report: bool = True,
    progress: bool = True,
    thumb_size: int = 128,
    embed_images: bool | None = None,
    explain: int = 0,
    engine: Engine | None = None,
    maps: str = "none",
) -> ScreenSummary:
    """Screen files / folders / globs (one, or a list) with ``model`` into ``out_dir``; ``engine`` says where
    the images are scored (default: this process); the results are written here either way.

    ``explain`` > 0: for each flagged image, a strip of its ``explain`` most anomalous
    patches beside the normal training patches they were matched with
    (``explain/*.jpg``, details in ``explain/*.json``; see :mod:`.explain`), named in the
    ``explain`` column and shown in the report. A resumed run also draws the strips its
    flagged rows lack, or have for a smaller ``explain`` (one for a larger is kept); their
    maps are computed again, their scores in results.csv stay.
    ``explain`` (a whole number, 0: none) and ``engine`` (None, or one ``make_engine`` made)
    are checked before any work.

    ``maps`` ("none", "flagged" or "all"): which images of this run get their anomaly map as
    ``maps/*.npy`` (named in the ``map`` column): float32 at the image's own size (after its
    EXIF orientation; scaled down to :data:`MAP_SIDE` px on the longer side where larger), the
    same map as the overlay shows, unscaled (the score's units; ``model.threshold`` is the
    image decision's), NaN where the model input does not cover the image (a centre crop's
    border). Resumed rows this run names that lack their map get it (a scoring pass over
    those images, as for their strips; their scores stay).

    ``overlays`` ("flagged", "all" or "none"): which images of this run get a heatmap overlay
    (``overlays/*.jpg``, named in the ``overlay`` column); resumed rows it asks for that lack
    theirs get it, as with ``maps`` (none where the scorer gives no patch maps).
    """
    for name, value in (("overlays", overlays), ("maps", maps)):
        if value not in OVERLAY_CHOICES:
            raise ValueError(f"{name} must be one of {OVERLAY_CHOICES}, got {value!r}")
    check_number("screen", "explain", explain, 0, whole=True)
    check_engine(engine)
    if labels is not None and not report:
        raise ValueError(f"labels={labels!r}: used only by the report, which report=False "
                         f"turns off; drop one of them")
    start = time.perf_counter()
    inputs = path_list(inputs, "inputs")  # one path, or a list
    out_dir = Path(out_dir)
    check_out_dir(out_dir, f"screening writes {RESULTS_CSV}, thumbs/ and report.html")
    # out_dir inside an input folder is no input; what an earlier run wrote where out_dir is
    # an input folder is left out by input_images
    paths = [os.path.abspath(p) for p in input_images(inputs, exclude=[out_dir], twins="keep")]
    if not paths:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    if report and labels not in (None, "none"):
        from .labels import resolve_labels

        # a missing or bad CSV, or labels naming none of the images the report covers (this
        # run's and, resumed, the earlier runs' rows: each once, as results.csv keys them
        # under the same absolute paths), fail now, not after scoring everything
        kept = [] if rescore else [row_key(r) for r in read_results(out_dir / RESULTS_CSV)[0]]
        resolve_labels(list(dict.fromkeys([*paths, *kept])), labels)
    check_instance("model", model, Model, "fit(...) or load_model(DIR)")  # before out_dir is made
    make_folder(out_dir)  # a file there: one line saying so
    with OutputLock(out_dir, "screen"):
        return _screen_locked(model, paths, out_dir, rescore, overlays, labels, report, progress,
                              thumb_size, embed_images, start, _explain_top(model, explain),
                              engine, maps)


def _explain_top(model: Model, top: int) -> int:
    """``top``, or 0 (with a warning) when the model cannot explain its scores."""
    if top <= 0:
        return 0
    from .explain import ExplainUnavailable, check_explainable

    try:
        check_explainable(model)
    except ExplainUnavailable as exc:
        log.warning("screening without explanations: %s", exc)
        return 0
    return top


def _screen_locked(model: Model, paths: list[str], out_dir: Path, rescore: bool, overlays: str,
                   labels: str | None, report: bool, progress: bool, thumb_size: int,
                   embed_images: bool | None, start: float, explain: int = 0,
                   engine: Engine | None = None, maps: str = "none") -> ScreenSummary:
    """:func:`screen` once ``out_dir`` is locked for this run."""
    csv_path, run_path = out_dir / RESULTS_CSV, out_dir / RUN_JSON
    ident = model_identity(model)

    # a results.csv without rows (a run killed before its first batch, or a rescore killed
    # once it started the file over) is a fresh start, whatever screen.json says
    rows, bad = ([], 0) if rescore else read_results(csv_path)
    if report and not rescore:
        from .html_report import REPORT_HTML, is_report

        page = out_dir / REPORT_HTML
        if page.is_file() and not is_report(page):
            raise ValueError(f"{page}: not a report of this tool; choose another out_dir or "
                             f"pass rescore=True")
    if rows:
        again = "pass rescore=True to start over or choose another out_dir"
        if not run_path.is_file():
            raise ValueError(f"{csv_path}: {RUN_JSON} is missing beside it, so the model that "
                             f"wrote it is unknown; {again}")
        try:
            meta = json.loads(run_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{run_path}: damaged ({exc}), so the model that wrote {csv_path.name} "
                             f"is unknown; {again}") from exc
        if not isinstance(meta, dict) or meta.get("model_id") != ident:
            raise ValueError(f"{csv_path}: was written by a different model; {again}")
        n_read = len(rows)
        # a path's last good row wins; a failed row is retried if this run screens its path,
        # kept (still an error of that earlier input) otherwise
        wanted, good = set(paths), {row_key(r) for r in rows if not r["error"]}
        by_key = {row_key(r): r for r in rows
                  if not r["error"] or row_key(r) not in wanted | good}
        n_err = sum(1 for r in rows if r["error"]) - sum(1 for r in by_key.values() if r["error"])
        rows = list(by_key.values())
        with open(csv_path, encoding="utf-8", errors="replace") as fh:
            legacy = fh.readline().rstrip("\r\n").split(",") != list(CSV_COLUMNS)
        if bad or len(rows) != n_read or legacy:  # cut-off lines, failed rows (retried), repeats
            _write_rows_atomic(csv_path, rows)
            log.info("%s: dropped %d malformed, %d failed (retried now) and %d repeated rows",
                     csv_path, bad, n_err, n_read - n_err - len(rows))
    else:
        if not rescore and run_path.is_file() and not _is_run_record(run_path):
            raise ValueError(f"{run_path}: not a run record of this tool; choose another "
                             f"out_dir or pass rescore=True")
        earlier = _earlier_rows(csv_path) if rescore else []  # their files are not this run's
        # first (before screen.json names this model): a kill between leaves an empty
        # results.csv, never another model's rows under this model's name
        _write_rows_atomic(csv_path, [])
        _remove_row_files(out_dir, earlier, csv_path)
    cal = model.calibration
    if not cal.has_p_values:
        from .calibration import NO_SCORES

        log.warning("%s (the p_value column of %s stays empty)", NO_SCORES, csv_path)
    write_json(run_path, {"model_id": ident, "model_created": model.info.created,
                          "threshold": cal.threshold, "expected_fpr": cal.expected_fpr,
                          "n_calibration": cal.n_calibration, "decision": "score > threshold"})
    done = {row_key(r) for r in rows}
    todo = [p for p in paths if p not in done]
    n_resumed = len(paths) - len(todo)
    if n_resumed:
        log.info("resuming: %d of %d images already in %s", n_resumed, len(paths), csv_path)
    incomplete = _incomplete_rows(model, rows, set(paths), out_dir, explain, maps, overlays) \
        if explain or maps != "none" or overlays != "none" else []
    # the engine (Ray) starts here, timed apart (as evaluate's engine_start), and only where
    # it has work: neither its start-up, nor its workers' warm-up, nor the resumed rows' pass
    # is in the throughput
    engine_start = start_engine(engine) if todo or incomplete else 0.0
    resumed_seconds = 0.0
    if incomplete:
        begun = time.perf_counter()
        _complete_resumed(model, rows, incomplete, out_dir, csv_path, explain, thumb_size, engine,
                          progress)
        resumed_seconds = time.perf_counter() - begun

    writer = _BatchWriter(model, out_dir, csv_path, overlays, thumb_size, explain, maps)
    n_flagged = n_scored = 0
    errors: list[tuple[str, str]] = []
    try:
        with Progress(len(todo), "screen", enabled=progress) as bar, \
                ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future | None = None
            keep = overlays != "none" or maps != "none" or explain > 0
            for batch in model.iter_score(todo, bar, keep_maps=keep,
                                            engine=engine, thumb_size=thumb_size,
                                            flagged_inputs=explain > 0, explain_top=explain,
                                            expand=False):
                for r in batch.images:
                    if r.error:
                        errors.append((display_path(r.path), r.error))
                    else:
                        n_scored += 1
                        n_flagged += int(bool(r.flagged))
                if pending is not None:
                    pending.result()  # at most one batch in flight: bounded memory
                pending = pool.submit(writer.write, batch.images, batch.inputs)
            if pending is not None:
                pending.result()
    finally:
        writer.close()
    if writer.mapless:
        _warn_mapless(model)
    warm_up = warm_up_seconds(engine) if todo else 0.0  # the new images' map's (the last)
    seconds = time.perf_counter() - start - engine_start - resumed_seconds - warm_up

    report_path = _write_report(out_dir, csv_path, model, labels, embed_images) if report else None
    summary = ScreenSummary(out_dir, csv_path, report_path, len(paths), n_scored, n_resumed,
                            n_flagged, len(errors), errors, seconds, engine_start, resumed_seconds,
                            warm_up)
    log.info("screened %d images (%d flagged, %d errors, %d resumed) in %.1f s (%.1f img/s; "
             "engine start %.1f s, engine warm-up %.1f s and resumed rows %.1f s apart)",
             n_scored, n_flagged, len(errors), n_resumed, seconds, summary.images_per_second,
             engine_start, warm_up, resumed_seconds)
    return summary


def _is_run_record(path: Path) -> bool:
    """Whether ``path`` is a ``screen.json`` as screen writes it: a JSON object naming a
    ``model_id`` (a damaged one is none)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and "model_id" in meta


def _write_report(out_dir: Path, csv_path: Path, model: Model, labels: str | None,
                  embed_images: bool | None) -> Path:
    """Write ``report.html`` for every row of ``csv_path``; where it cannot be written (a full
    disk, a folder made read-only meanwhile), the error says the rows are kept."""
    from . import html_report

    all_rows, _ = read_results(csv_path)
    try:
        return html_report.write_report(out_dir, all_rows, model, labels=labels,
                                         embed_images=embed_images)
    except OSError as exc:
        raise reworded(exc, f"{exc}; the rows screened are kept in {csv_path}: run again (it "
                            f"resumes) to write the report") from None


def row_files(row: dict[str, str]) -> list[str]:
    """The files screen wrote for a results row, relative to its folder: the thumbnail, and
    the overlay (with its thumbnail), explanation strip (with its JSON) and anomaly map the row
    names, where they are the names screen gives that row's files (a hand-edited cell names
    nothing)."""
    if row["error"]:
        return []
    key = row_key(row)
    files = [thumb_relpath(key)]
    if row["overlay"] and row["overlay"] == overlay_relpath(key):
        files += [row["overlay"], thumb_relpath(key, overlay=True)]
    if row["explain"] and row["explain"] == explain_relpath(key):
        files += [row["explain"], explain_relpath(key, ".json")]
    if row.get("map") and row["map"] == map_relpath(key):
        files.append(row["map"])
    return files


def _earlier_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of an earlier ``results.csv`` (none where there is none, or one that is not
    ours or cannot be read)."""
    try:
        return read_results(csv_path)[0] if csv_path.exists() else []
    except (OSError, ValueError):
        return []


def _remove_row_files(out_dir: Path, rows: list[dict[str, str]], csv_path: Path) -> None:
    """Remove the files earlier ``rows`` name (:func:`row_files`) once ``results.csv`` is
    started over (``rescore``): an overlay or strip of another model, or of an image no longer
    screened, would otherwise stay beside the new rows and be taken for theirs. Nothing else is
    removed."""
    # an `explain --out OUT/explain` names its strips as screen does: those it lists stay
    explained = {Path(name).stem for name in listed_strips(out_dir / "explain")}
    removed = 0
    for row in rows:
        for rel in row_files(row):
            if rel.startswith("explain/") and Path(rel).stem in explained:
                continue
            try:
                (out_dir / rel).unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove the earlier run's %s: %s", out_dir / rel, exc)
    if removed:
        log.info("rescore: removed %d thumbnails, overlays, strips and maps of the earlier rows of %s",
                 removed, csv_path)


def _incomplete_rows(model: Model, rows: list[dict[str, str]], paths: set[str], out_dir: Path,
                     top: int, maps: str, overlays: str) -> list[tuple[dict[str, str], tuple]]:
    """This run's resumed ``rows`` (their keys in ``paths``) that lack what it asks for
    (screened without ``explain`` / ``maps`` / ``overlays``, rescored since, or the file is
    gone), each with what it lacks, ``(strip, map, overlay)``: the strip of a flagged row
    (``top`` > 0; also one drawn for a smaller ``top``, or whose explanation JSON is damaged:
    :func:`_strip_top`), and the map and the overlay of a row ``maps`` and ``overlays`` ask
    for (an overlay only where the scorer gives patch maps: else it would score them again on
    every resume for nothing)."""
    def lacks(r: dict[str, str], column: str) -> bool:
        return not (r[column] and (out_dir / r[column]).is_file())

    def lacks_strip(r: dict[str, str]) -> bool:
        return lacks(r, "explain") or _strip_top(out_dir / explain_relpath(row_key(r), ".json")) < top

    def asks(which: str, flagged: bool) -> bool:
        return which == "all" or (which == "flagged" and flagged)

    patch_maps = "patches" in model.scorer.requires  # the features a patch map is made of

    def wants(r: dict[str, str]) -> tuple[bool, bool, bool]:
        flagged = r["decision"] == "anomalous"
        return (top > 0 and flagged and lacks_strip(r),
                asks(maps, flagged) and lacks(r, "map"),
                patch_maps and asks(overlays, flagged) and lacks(r, "overlay"))

    # each row's wants once (a strip's JSON is read for it)
    return [(r, w) for r in rows if not r["error"] and row_key(r) in paths
            for w in [wants(r)] if any(w)]


def _complete_resumed(model: Model, rows: list[dict[str, str]],
                      todo: list[tuple[dict[str, str], tuple]], out_dir: Path, csv_path: Path,
                      top: int, thumb_size: int, engine: Engine | None, progress: bool) -> None:
    """Write what the resumed rows in ``todo`` lack (:func:`_incomplete_rows`), recorded in
    ``rows`` and results.csv (also when the run stops half-way). Their maps are computed again
    (a scoring pass); their scores in results.csv stay."""
    kinds = ("explanation strips", "anomaly maps", "overlays")
    log.info("writing the %s of %d images already in %s (their scores there stay)",
             " and ".join(kind for i, kind in enumerate(kinds) if any(w[i] for _, w in todo)),
             len(todo), csv_path)
    strips = _Strips(model, out_dir, top) if top else None
    drawn = _Overlays(model, out_dir, thumb_size)
    transform = model.extractor.transform
    done = written = 0
    mapless = False
    try:
        with Progress(len(todo), "resumed rows", enabled=progress) as bar:
            for batch in model.iter_score([row_key(r) for r, _ in todo], bar, keep_maps=True,
                                          engine=engine, explain_top=top,
                                          expand=False):  # whole inputs back
                for k, r in enumerate(batch.images):
                    row, (strip, amap, overlay) = todo[done + k]
                    if r.error:
                        log.warning("no strip, map or overlay for %s: %s", r.path, r.error)
                        continue
                    if amap and r.patch_scores is None:
                        mapless, amap = True, False
                    if strip:
                        row["explain"] = strips.write(r, batch.inputs[k])
                        written += bool(row["explain"])
                    if amap:
                        row["map"] = _write_map(out_dir, transform, r)
                        written += bool(row["map"])
                    if overlay and r.patch_scores is not None:
                        row["overlay"] = drawn.write(r)
                        written += bool(row["overlay"])
                done += len(batch.images)
    finally:
        if written:
            _write_rows_atomic(csv_path, rows)
        if mapless:
            _warn_mapless(model)


def _strip_top(path: Path) -> int:
    """The TOP the explanation JSON screen wrote at ``path`` was drawn for: the ``top`` it
    records (an image may give fewer patches), or, written before it did, its number of
    patches; 0 where it is missing, damaged or not ours (its strip is drawn again)."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a UnicodeDecodeError is a ValueError
        return 0
    if not isinstance(entry, dict) or not isinstance(entry.get("patches"), list):
        return 0
    asked = entry.get("top")
    return max(asked if isinstance(asked, int) else 0, len(entry["patches"]))


class _Strips:
    """Writes the explanation strips of flagged images (``explain/<key>.jpg`` and ``.json``,
    which records the ``top`` asked for: :func:`_strip_top`)."""

    def __init__(self, model: Model, out_dir: Path, top: int):
        from .explain import TrainingImages

        self.model, self.out_dir, self.top = model, out_dir, top
        self.train = TrainingImages(model)

    def write(self, r: ScoredImage, image_input: np.ndarray) -> str:
        """Explain ``r`` and draw its strip on ``image_input`` (the image as the model saw it,
        content only); the strip's path relative to ``out_dir``, or "" (with a warning) when
        it cannot be made: an explanation never stops the screening."""
        from .explain import error_reason, explain_scored, render_strip

        rel = explain_relpath(r.path)
        try:
            e = explain_scored(self.model, r, self.top, self.train)
        except (OSError, ValueError, cv2.error) as exc:
            log.warning("no explanation for %s: %s", display_path(r.path), error_reason(exc, r.path))
            return ""
        entry = {**e.to_dict(), "top": self.top}
        try:
            write_rgb(self.out_dir / rel, render_strip(self.model, e, image_input, self.train))
        except (OSError, ValueError, cv2.error) as exc:  # the explanation is kept, as explain keeps it
            entry["strip_error"] = error_reason(exc, r.path)
            log.warning("no explanation strip for %s: %s", display_path(r.path), entry["strip_error"])
            rel = ""
        try:
            write_json(self.out_dir / explain_relpath(r.path, ".json"), entry, indent=1, default=str)
        except OSError as exc:
            log.warning("no explanation for %s: %s", display_path(r.path), exc)
            return ""
        return rel


class DiskFullError(OSError):
    """The output folder's disk is full, or the folder cannot be written (read-only, no
    permission): screening stops (a later file would fail too)."""


#: write errors that stop the screening (:class:`DiskFullError`), each with what to do
_STOPPING = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
             errno.EACCES: "make the folder writable", errno.EROFS: "make the folder writable"}


def _save(out_dir: Path, r: ScoredImage, rel: str, what: str, write) -> bool:
    """``write(path)`` to ``out_dir / rel``; False, with a warning naming ``r`` and the file,
    where it cannot be (the row is kept); :class:`DiskFullError` on a full disk or a folder that
    cannot be written."""
    path = out_dir / rel
    try:
        write(path)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):  # no part-written file is taken for the image's
            if path.is_file():
                path.unlink()
        # the system's words only: a message that names the path and a fix is said once, below
        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        if exc.errno in _STOPPING:  # every later image would fail too: no silent gap
            raise DiskFullError(f"{display_path(path)}: cannot write the {what} of "
                                f"{display_path(r.path)} ({reason}); the rows screened so far "
                                f"are kept: {_STOPPING[exc.errno]} and run again to resume"
                                ) from exc
        log.warning("no %s for %s: cannot write %s (%s)", what, display_path(r.path),
                    display_path(path), reason)
        return False


def _save_rgb(out_dir: Path, r: ScoredImage, rel: str, image: np.ndarray, what: str) -> bool:
    """Write the RGB ``image`` (``r``'s ``what``) to ``out_dir / rel`` (see :func:`_save`)."""
    return _save(out_dir, r, rel, what, lambda path: write_rgb(path, image))


def _warn_mapless(model: Model) -> None:
    log.warning("no anomaly maps written: the model's scorer (%s) gives image scores only, no "
                "patch maps", model.cfg.method)


def _write_map(out_dir: Path, transform, r: ScoredImage) -> str:
    """``r``'s anomaly map as ``maps/*.npy`` (see :func:`screen`); its path relative to
    ``out_dir``, or "" (with a warning)."""
    try:
        width, height = image_size(r.path, transform.max_pixels)
    except OSError as exc:
        log.warning("no anomaly map for %s: %s", r.path, exc)
        return ""
    scale = min(1.0, MAP_SIDE / max(height, width))
    shown = (max(1, round(height * scale)), max(1, round(width * scale)))
    amap, covered = image_map(r.patch_scores, r.cells, r.grid, transform, (height, width), shown)
    amap[~covered] = np.nan

    def write(path: Path) -> None:
        with replacing(path) as tmp:
            np.save(tmp, amap.astype(np.float32, copy=False))

    rel = map_relpath(r.path)
    return rel if _save(out_dir, r, rel, "anomaly map", write) else ""


class _BatchWriter:
    """Writes thumbnails, overlays, strips and CSV rows for one batch (runs in a worker thread).

    An image file that cannot be written is left out with a warning and its row kept; a full
    disk or a folder that cannot be written (read-only, no permission) stops the run, naming
    the file, once the rows done before it are in the CSV."""

    def __init__(self, model: Model, out_dir: Path, csv_path: Path, overlays: str, thumb_size: int,
                 explain: int = 0, maps: str = "none"):
        self.strips = _Strips(model, out_dir, explain) if explain else None
        self.drawn = _Overlays(model, out_dir, thumb_size)
        self.out_dir = out_dir
        self.overlays = overlays
        self.maps = maps
        self.mapless = False  # a map was asked for an image whose scorer gives none
        self.thumb_size = thumb_size
        self.transform = model.extractor.transform
        self.fh = open(csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.csv = csv.DictWriter(self.fh, CSV_COLUMNS)

    def close(self) -> None:
        # each batch was flushed; only one whose flush failed (a full disk, already raised)
        # can fail again here, which must not hide that error
        with contextlib.suppress(OSError):
            self.fh.close()

    def write(self, images: list[ScoredImage], inputs: dict[int, np.ndarray]) -> None:
        rows = []
        try:
            for k, r in enumerate(images):
                rows.append(self._row(r, inputs.get(k)))
        except DiskFullError:
            with contextlib.suppress(OSError):
                self._append(rows)
            raise
        self._append(rows)

    def _append(self, rows: list[dict[str, str]]) -> None:
        self.csv.writerows(rows)
        self.fh.flush()

    def _row(self, r: ScoredImage, x: np.ndarray | None) -> dict[str, str]:
        """``r``'s results row, once its thumbnail, overlay and strip are written."""
        overlay = strip = amap = ""
        if not r.error:
            # a remote engine sends uint8 RGB: the thumbnail, or with strips a flagged
            # image's model input (remote.thumbnailed, by the same calls as here)
            t = self.transform
            image = x if x.dtype == np.uint8 else denormalise(x, t.mean, t.std)
            _save_rgb(self.out_dir, r, thumb_relpath(r.path), self._thumbnail(r, image),
                      "thumbnail")
            want = self.overlays == "all" or (self.overlays == "flagged" and r.flagged)
            if want and r.patch_scores is not None:
                overlay = self.drawn.write(r)
            if self.strips is not None and r.flagged and r.nearest is not None:
                strip = self.strips.write(r, image)
            if self.maps == "all" or (self.maps == "flagged" and r.flagged):
                if r.patch_scores is None:
                    self.mapless = True
                else:
                    amap = _write_map(self.out_dir, self.transform, r)
        return {"path": display_path(r.path), "score": _fmt(r.score),
                "p_value": _fmt(r.p_value), "decision": r.decision, "error": r.error,
                "overlay": overlay, "raw_path": raw_path_field(r.path), "explain": strip,
                "map": amap}

    def _thumbnail(self, r: ScoredImage, image: np.ndarray) -> np.ndarray:
        """The report's thumbnail of ``r`` from its model input ``image`` (or a remote worker's
        thumbnail of it), at the source image's aspect ratio, as its overlay thumbnail: a
        stretched input is square whatever the image's shape (its size comes from the file's
        header, no second decode; the square stays where the header cannot be read now). A
        padded input's content already has the image's shape. With a centre crop the input
        holds only the crop: the thumbnail is made from the whole image, as its overlay is
        (:class:`_Overlays`; from the input, with a warning, where the file cannot be read now)."""
        if self.transform.crop_size:
            try:
                whole = read_image(r.path, self.transform.max_pixels, min_side=2 * self.thumb_size)
                return fit_within(whole, self.thumb_size)
            except OSError as exc:
                log.warning("the thumbnail of %s shows its centre crop only: %s", r.path, exc)
        if self.transform.resize != "stretch":
            return fit_within(image, self.thumb_size)
        try:
            width, height = image_size(r.path, self.transform.max_pixels)
        except OSError:
            return fit_within(image, self.thumb_size)
        scale = min(self.thumb_size, max(image.shape[:2])) / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size == (image.shape[1], image.shape[0]):
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class _Overlays:
    """Writes the heatmap overlays of scored images (``overlays/<key>.jpg`` and their
    thumbnails), all in the model's one colour range: for new rows (:class:`_BatchWriter`) and
    resumed rows that lack theirs (:func:`_complete_resumed`)."""

    def __init__(self, model: Model, out_dir: Path, thumb_size: int):
        self.out_dir, self.thumb_size = out_dir, thumb_size
        self.transform = model.extractor.transform
        disp = model.info.display or {}
        thr = model.threshold
        self.vmin = disp.get("map_vmin", 0.5 * thr)
        self.vmax = disp.get("map_vmax", 1.5 * thr)

    def write(self, r: ScoredImage) -> str:
        """The heatmap of ``r`` (its patch scores) over the original image (a huge JPEG decoded
        reduced), not over the model input; its path relative to the output folder, or ""
        (with a warning; a full disk raises :class:`DiskFullError`, see :func:`_save`)."""
        try:
            image = read_image(r.path, self.transform.max_pixels, min_side=2 * OVERLAY_SIDE)
        except OSError as exc:
            log.warning("no overlay for %s: %s", r.path, exc)
            return ""
        over = heatmap_overlay(image, r.patch_scores, r.cells, r.grid, self.transform, self.vmin,
                               self.vmax, max_side=OVERLAY_SIDE)
        rel = overlay_relpath(r.path)
        if not _save_rgb(self.out_dir, r, rel, over, "overlay"):
            return ""
        _save_rgb(self.out_dir, r, thumb_relpath(r.path, overlay=True),
                  fit_within(over, self.thumb_size), "overlay thumbnail")
        return rel
