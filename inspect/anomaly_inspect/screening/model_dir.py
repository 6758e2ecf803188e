"""The saved-model directory: ``model.json`` plus the scorer's safetensors state.

Layout::

    MODEL_DIR/model.json                    format + toolkit + library versions, config,
                                            backbone and weight checksum, calibration,
                                            training / calibration image lists
    MODEL_DIR/scorer/scorer.json            scorer name and constructor parameters
    MODEL_DIR/scorer/scorer_state.safetensors
    MODEL_DIR/checksums.json                sha256 and size of each file above
    MODEL_DIR/backbone/*.onnx               the backbone's ONNX export(s), when a non-torch
                                            runtime ran it (a cache: rebuilt if absent)

Saving writes everything into a temporary folder ``.NAME.tmp-XXXXXXXX`` beside the
target and moves it into place with ``os.replace``: a crash leaves either the old model or
the new one, never a half-written directory that loads. Nothing is pickled. A model already
at the target is first moved into ``.NAME.old-XXXXXXXX`` (same suffix as its new one's
folder), then the new one is moved in; a run killed between the two leaves no model at the
target, and the next save to it, or the next load of it, puts one back: the new one where
its checksums verify, else the old one (:func:`recover_replace`). Both folders are
``flock``-ed while in use, so the next save to the same target removes the ones a killed run
(``kill -9``) left behind. The model folder gets the permissions the umask gives a new folder.
Loading verifies every checksum first, so a changed, truncated or damaged file
is refused with one line naming it (models saved before checksums existed
load with a warning; a later model without its list is refused: :func:`verify_model_files`);
a load that a save replaced the directory under is run again, never
mixing two models' files (:func:`loaded_whole`). ``overwrite`` replaces only a directory
recognised as a model and removes only the files a model writes (and exported graphs
``backbone/*.onnx`` the new model does not hold); other files in it are kept: moved into the
new folder before the swap (:func:`_replace_model`). A save holds ``.NAME.lock`` beside the
target from start to end (:func:`save_lock`; ``fit --out`` takes it before it fits), so a
second save to it meanwhile is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import __version__
from ..config import ConfigError, check_field_types
from ..files import (
    FULL_OR_READ_ONLY,
    current_umask,
    file_sha256,
    flock_file,
    holding_lock,
    lock_folder,
    make_folder,
    remove_stale_folders,
    unlock_file,
    write_error,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MODEL_FORMAT_VERSION = 2
MODEL_JSON = "model.json"
SCORER_DIR = "scorer"
CHECKSUMS_JSON = "checksums.json"
#: every file a model directory holds (besides those listed in its checksums)
MODEL_FILES = (MODEL_JSON, CHECKSUMS_JSON, f"{SCORER_DIR}/scorer.json",
               f"{SCORER_DIR}/scorer_state.safetensors")
BACKBONE_DIR = "backbone"
#: a ``model.json`` key every save has written since 2026-12-02 (e677514), after checksums.json
#: came in (2026-12-01, 8d2a31c; both under format version 2, which predates checksums): a
#: model.json holding it was saved with a checksum list, so one without the list is refused
SAVED_WITH_CHECKSUMS_KEY = "train_image_sha256"


class ModelFormatError(ValueError):
    """A model directory that this version cannot (or must not) load."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour a saved model depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("torch", "timm", "faiss-cpu", "numpy", "opencv-python-headless",
                 "albumentations", "safetensors", "scipy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


@dataclass
class ModelInfo:
    """Everything in ``model.json``."""

    config: dict[str, Any]
    backbone: dict[str, Any]  # name, layers, weight source {kind, location, checksum}
    calibration: dict[str, Any]
    train_images: list[str]
    calibration_images: list[str]
    skipped_images: list[dict[str, str]] = field(default_factory=list)
    display: dict[str, float] = field(default_factory=dict)
    created: str = ""
    #: sha256 of each training image's content at fit (empty for older models): an explanation
    #: shows a training crop only if the file is still the one the model learnt from
    train_image_sha256: list[str] = field(default_factory=list)
    #: each training image's name as the file system spells it, percent-encoded where it is not
    #: UTF-8 (as results.csv's ``raw_path``; "" for every other name, and an empty list for
    #: older models): ``train_images`` holds display text, which does not open such a file
    train_images_raw: list[str] = field(default_factory=list)
    format_version: int = MODEL_FORMAT_VERSION
    toolkit_version: str = __version__
    libraries: dict[str, str] = field(default_factory=library_versions)
    tuning: dict[str, Any] | None = None  # ``fit --auto``: the choice, every candidate's scores, the recipe

    def to_dict(self) -> dict[str, Any]:
        # absent rather than empty: an older model's description (its identity) stays the same
        extra = {**({"train_images_raw": self.train_images_raw} if self.train_images_raw else {}),
                 **({} if self.tuning is None else {"tuning": self.tuning})}
        return {
            "format_version": self.format_version,
            "toolkit_version": self.toolkit_version,
            "created": self.created,
            "libraries": self.libraries,
            "config": self.config,
            "backbone": self.backbone,
            "calibration": self.calibration,
            "display": self.display,
            "train_images": self.train_images,
            "train_image_sha256": self.train_image_sha256,
            "calibration_images": self.calibration_images,
            "skipped_images": self.skipped_images,
            **extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> ModelInfo:
        try:
            info = cls(**{k: d[k] for k in (
                "config", "backbone", "calibration", "train_images", "calibration_images",
                "skipped_images", "display", "created", "format_version", "toolkit_version",
                "libraries")}, train_image_sha256=list(d.get("train_image_sha256") or []),
                       train_images_raw=list(d.get("train_images_raw") or []),
                       tuning=d.get("tuning"))
        except KeyError as exc:
            raise ModelFormatError(f"{source}: missing field {exc} in {MODEL_JSON}") from None
        except TypeError as exc:
            raise ModelFormatError(f"{source}: {MODEL_JSON} is not a model description ({exc})") from None
        try:
            check_field_types(info, "")
        except ConfigError as exc:
            raise ModelFormatError(f"{source}: {MODEL_JSON}: {exc}") from None
        if info.train_images_raw and len(info.train_images_raw) != len(info.train_images):
            raise ModelFormatError(f"{source}: train_images_raw: {len(info.train_images_raw)} "
                                   f"entries for {len(info.train_images)} train_images")
        return info


def write_checksums(root: Path) -> None:
    """Record sha256 and size of every file under ``root`` in its ``checksums.json``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS_JSON)
    table = {p.relative_to(root).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in files}
    (root / CHECKSUMS_JSON).write_text(json.dumps({"algorithm": "sha256", "files": table},
                                                  indent=2), encoding="utf-8")


def read_checksums(directory: Path) -> dict[str, dict[str, Any]] | None:
    """``{relative path: {sha256, bytes}}``, or None for a model saved without checksums."""
    path = directory / CHECKSUMS_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("algorithm") != "sha256" or not isinstance(files, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
                for v in files.values()):
            raise ValueError("unexpected content")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: damaged checksum list ({exc}); restore the model "
                               f"directory or re-fit") from None
    return files


def fingerprint(checksums: bytes | None) -> str | None:
    """A model directory's fingerprint: the sha256 of its ``checksums.json`` (``checksums``),
    None for a model saved without one."""
    return None if checksums is None else hashlib.sha256(checksums).hexdigest()


def directory_fingerprint(directory: Path) -> str | None:
    """The fingerprint (:func:`fingerprint`) of the model directory now at ``directory``."""
    path = directory / CHECKSUMS_JSON
    return fingerprint(path.read_bytes() if path.is_file() else None)


def _load_state(directory: Path) -> tuple:
    """What tells that a save replaced ``directory`` meanwhile: its fingerprint, and which file
    holds its checksum list (a save writes a new one, also for the same model saved again)."""
    try:
        stat = (directory / CHECKSUMS_JSON).stat()
        held = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
    except OSError:
        held = None
    try:
        return held, directory_fingerprint(directory)
    except OSError:  # removed since the stat: that one differs
        return held, None


#: loads of one model directory that a save replaced while they ran, before a load is refused
LOAD_ATTEMPTS = 3


def loaded_whole(directory: Path, load: Callable[[], T], attempts: int = LOAD_ATTEMPTS) -> T:
    """``load()`` of the model directory ``directory``, run again where a save replaced it
    meanwhile (what it read may be of two models, and its error, if any, of neither); refused
    after ``attempts`` such runs. Takes no lock: a load needs no write access."""
    for _ in range(attempts):
        before = _load_state(directory)
        try:
            loaded = load()
        except Exception:
            if _load_state(directory) == before:
                raise
            continue
        if _load_state(directory) == before:
            return loaded
    raise RuntimeError(f"{directory}: replaced while loading ({attempts} times in a row: saves "
                       f"to it ran meanwhile); retry")


def verify_model_files(directory: Path | str) -> None:
    """Refuse a model directory whose files differ from those written at ``fit``. Without a
    checksum list: a model saved before checksums existed loads with a warning; one saved
    since (:data:`SAVED_WITH_CHECKSUMS_KEY`) is refused: its list was removed, and every
    integrity check with it."""
    directory = Path(directory)
    table = read_checksums(directory)
    if table is None:
        if _saved_with_checksums(directory):
            raise ModelFormatError(
                f"{directory / CHECKSUMS_JSON}: missing, but {MODEL_JSON} was written by a "
                f"version that saves it with every model, so the files cannot be verified; "
                f"restore the model directory or re-fit")
        log.warning("%s: no %s (saved by an older version): file integrity not verified",
                    directory, CHECKSUMS_JSON)
        return
    for rel, want in table.items():
        _verify_file(directory, rel, want)


def _saved_with_checksums(directory: Path) -> bool:
    """Whether ``directory``'s model.json was written by a version that saves a checksum list
    with every model (:data:`SAVED_WITH_CHECKSUMS_KEY`); False where it cannot be read (what
    reads it says why)."""
    try:
        data = json.loads((directory / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and SAVED_WITH_CHECKSUMS_KEY in data


def _verify_file(directory: Path, rel: str, want: dict[str, Any]) -> None:
    """Refuse file ``rel`` of ``directory`` unless its size and sha256 are ``want``'s."""
    path = directory / rel
    if ".." in Path(rel).parts or Path(rel).is_absolute():
        raise ModelFormatError(f"{directory / CHECKSUMS_JSON}: bad file name {rel!r}")
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing from the model directory")
    size = path.stat().st_size
    if size != want["bytes"]:
        how = "changed or truncated" if size < want["bytes"] else "changed"
        raise ModelFormatError(f"{path}: {how} since the model was saved ({size} bytes, "
                               f"{want['bytes']} when saved); restore the model directory "
                               f"or re-fit")
    if file_sha256(path) != want["sha256"]:
        raise ModelFormatError(f"{path}: changed since the model was saved (sha256 "
                               f"mismatch); restore the model directory or re-fit")


def is_model_dir(target: Path) -> bool:
    """A folder this tool wrote: its model.json is a JSON object with a format version."""
    try:
        data = json.loads((target / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "format_version" in data


def model_dir_holding(path: Path | str) -> Path | None:
    """The model directory (:func:`is_model_dir`) one of whose own files (:func:`_model_files`,
    or one a save writes) ``path`` is, else None: another command writing there would leave
    the model unusable. A link is looked at as itself and as the file it names, which is the
    one written (``files.replacing`` writes through a link)."""
    path = Path(path)
    for named in dict.fromkeys((path.parent.resolve() / path.name, Path(os.path.realpath(path)))):
        for folder in named.parents:
            if is_model_dir(folder):
                rel = named.relative_to(folder).as_posix()
                if rel in MODEL_FILES or rel in _model_files(folder):
                    return folder
    return None


def _model_files(target: Path) -> set[str]:
    """Relative paths of the files a model or this tool wrote into ``target``: those its
    checksum list names, the list itself, and every ``backbone/**.onnx`` (graphs exported
    there after the model was saved are a cache, not the user's)."""
    try:
        listed = set(read_checksums(target) or {})
    except ModelFormatError:
        listed = set()
    graphs = {p.relative_to(target).as_posix() for p in (target / BACKBONE_DIR).rglob("*.onnx")}
    return {rel for rel in listed | set(MODEL_FILES) | graphs if (target / rel).is_file()}


def saved_graphs(directory: Path | str) -> dict[str, Path]:
    """The backbone graphs model directory ``directory`` holds as part of the model (those its
    checksums list): relative name -> file, for a save of the loaded model to carry over."""
    directory = Path(directory)
    listed = read_checksums(directory) or {}
    return {rel: directory / rel for rel in sorted(listed)
            if Path(rel).parts[0] == BACKBONE_DIR and (directory / rel).is_file()}


def check_replaceable(target: Path | str, overwrite: bool) -> None:
    """Raise unless a model may be saved to ``target``: a new path or an empty folder, or a
    model directory with ``overwrite``. Anything else (a file, a folder of other files) is
    never replaced, so its refusal does not suggest ``overwrite``; nor is a symbolic link
    (the save would replace the link, not the model it names), refused as one."""
    target = Path(target)
    if target.is_symlink():
        raise FileExistsError(f"{target}: is a symbolic link (to {os.readlink(target)}); give "
                              f"the model directory itself")
    if not target.exists():
        return
    folder = target.is_dir()
    if folder and not any(target.iterdir()):
        return
    if folder and is_model_dir(target):
        if not overwrite:
            raise FileExistsError(f"{target}: already exists; pass overwrite=True to replace it")
        return
    # Never delete something that is not a model directory, --overwrite or not.
    raise FileExistsError(f"{target}: exists and is not a model directory; refusing to replace it")


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def _aside_prefix(target: Path) -> str:
    return f".{target.name}.old-"


def _folders(target: Path, prefix: str) -> re.Pattern:
    """Names of ``target``'s staging or set-aside folders (``prefix``, mkdtemp's 8 characters)."""
    return re.compile(re.escape(prefix) + r"[a-z0-9_]{8}")


#: marks a ``.NAME.old-X`` folder whose replacement is in place (see :func:`recover_replace`)
SWAPPED = "swapped"


def recover_replace(target: Path | str) -> bool:
    """Undo what a run replacing the model at ``target`` left when it was killed: put a model
    back at a missing ``target`` (:func:`_put_back`), and give back the user's files it had
    moved into its staging folder (:func:`_replace_model`). Folders a live run holds are left
    alone. True where a model was put back."""
    target = Path(target)
    put_back = not (target.exists() or target.is_symlink()) and _put_back(target)
    if target.is_dir() and not target.is_symlink():
        _return_users_files(target)
    return put_back


def _put_back(target: Path) -> bool:
    """Put a model back at a missing ``target`` where a run replacing the model there was
    killed between moving the old one aside and moving the new one in: the new one
    (``.NAME.tmp-X``) where it is complete (its checksums verify), else the old one
    (``.NAME.old-X/model``). An aside marked as swapped is stale (the run was killed after the
    new model was in place; a model deleted since is not brought back) and removed."""
    pattern = _folders(target, _aside_prefix(target))
    try:
        siblings = sorted(target.parent.iterdir())
    except OSError:
        return False
    for aside in siblings:
        if not pattern.fullmatch(aside.name) or aside.is_symlink() or not (aside / "model").is_dir():
            continue
        fd = lock_folder(aside)
        if fd is None:  # a live run's, gone since, or a file system without flock: left alone
            continue
        if (aside / SWAPPED).exists():
            # killed after the new model was moved in (only the aside's removal was left): the
            # model at target since then was removed by someone, not lost; nothing to put back
            os.close(fd)
            shutil.rmtree(aside, ignore_errors=True)
            continue
        new = aside.with_name(_staging_prefix(target) + aside.name[-8:])
        new_fd = lock_folder(new) if new.is_dir() and not new.is_symlink() else None
        try:
            if target.exists() or target.is_symlink():  # another run put one back meanwhile
                return False
            if new_fd is not None and _verifies(new):
                os.replace(new, target)
                how = f"the new model, which the run had finished writing ({new.name})"
            else:
                os.replace(aside / "model", target)
                how = f"the model it was replacing ({aside.name}/model)"
        except OSError as exc:
            log.warning("%s: missing: a run replacing the model was killed, and it cannot be "
                        "put back (%s); the old model lies in %s", target, exc, aside / "model")
            return False
        finally:
            for held in (fd, new_fd):
                if held is not None:
                    os.close(held)
        shutil.rmtree(aside, ignore_errors=True)
        log.warning("%s: a run replacing the model was killed; put back %s", target, how)
        return True
    return False


def _return_users_files(target: Path) -> None:
    """Move back into ``target`` the user's files that a replacing run, killed since, had
    moved into its staging folder (a name ``target`` has again stays as it is there)."""
    pattern = _folders(target, _staging_prefix(target))
    try:
        siblings = sorted(target.parent.iterdir())
    except OSError:
        return
    for staging in siblings:
        if not pattern.fullmatch(staging.name) or staging.is_symlink() or not staging.is_dir():
            continue
        fd = lock_folder(staging)
        if fd is None:  # a live run's
            continue
        try:
            taken = _taken_along(staging)
            left = _hand_back(staging, target, taken)
            kept = _set_apart(staging, target) if left else None
        finally:
            os.close(fd)
        if taken:
            log.warning("%s: a run replacing the model was killed; gave back %d of its files "
                        "that are not part of the model%s", target, len(taken) - len(left),
                        f" ({len(left)} kept in {kept or staging}: {target} has those names "
                        f"again)" if left else "")


def _set_apart(staging: Path, target: Path) -> Path | None:
    """The user's files a killed run left in ``staging`` that could not be given back (the
    model has those names again), in a folder of their own beside ``target``
    (``NAME.recovered-X``), the model copy removed: never taken for a staging folder again."""
    for rel in _model_files(staging):
        with contextlib.suppress(OSError):
            (staging / rel).unlink()
    kept = target.parent / f"{target.name}.recovered-{staging.name.rsplit('-', 1)[-1]}"
    try:
        os.rename(staging, kept)
    except OSError:
        return None
    return kept


def _verifies(folder: Path) -> bool:
    """``folder`` holds a checksum list (written last) and every file verifies against it."""
    try:
        if read_checksums(folder) is None:
            return False
        verify_model_files(folder)
    except (ModelFormatError, OSError):
        return False
    return True


@contextlib.contextmanager
def staged_model_dir(target: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``target`` to write a model directory into (its checksums
    last: :func:`write_checksums`), locked while it is written. On a clean exit it is synced
    to disk and put at ``target`` (a model already there is replaced, keeping files a model
    did not write); on an error it is removed. First puts back a model a killed replacing run
    left missing (:func:`recover_replace`); refuses a ``target`` that
    :func:`check_replaceable` refuses; removes the folders of killed runs. An error writing
    it (a full disk, a folder made read-only) is one line naming ``target``
    (:func:`_naming_target`)."""
    target = Path(target)
    with _saving(target), _naming_target(target):  # the lock: _flocked names it
        recover_replace(target)
        check_replaceable(target, overwrite)
        remove_stale_folders(target.parent, _folders(target, _staging_prefix(target)),
                             keep=_taken_along)  # the user's files recover_replace left there
        if target.exists():  # never the only copy of a model: only where one is in place
            remove_stale_folders(target.parent, _folders(target, _aside_prefix(target)))
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
        with holding_lock(tmp):
            try:
                tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it owner-only
                yield tmp
                mode = 0o666 & ~current_umask()
                for f in tmp.rglob("*"):  # some writers (safetensors) make their files owner-only
                    if f.is_file() and not f.is_symlink():
                        f.chmod(mode)
                _fsync_tree(tmp)
                if target.exists():
                    _replace_model(tmp, target)
                else:
                    os.replace(tmp, target)
            except BaseException:
                if _taken_along(tmp):  # the user's files no move could give back: kept there
                    log.warning("%s: holds files of %s that could not be moved back; the next "
                                "save or load of %s gives them back", tmp, target, target.name)
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise


@contextlib.contextmanager
def _naming_target(target: Path) -> Iterator[None]:
    """Raise an error writing the model at ``target`` (:func:`_writes_model`) as one line naming
    ``target`` (:func:`~..files.write_error`: a full disk says so), not the staging folder or
    lock file beside it that the user never asked for."""
    try:
        yield
    except OSError as exc:
        if not _writes_model(exc, target):
            raise
        raise write_error(exc, target) from None


def _writes_model(exc: OSError, target: Path) -> bool:
    """``exc`` comes from writing the model at ``target`` (not from reading a source, nor one of
    our own one-line errors, which have no errno): it has an errno and names no file, or one
    that a save writes (``target``, the ``.NAME.*`` staging, set-aside and lock files beside
    it, or a folder above them being made)."""
    if exc.errno is None:
        return False
    if exc.filename2 is not None and exc.errno not in FULL_OR_READ_ONLY:
        return False  # a copy into the model failed reading its source: both paths say where
    named = [n for n in (exc.filename, exc.filename2) if isinstance(n, (str, bytes, os.PathLike))]
    if not named:
        return True
    folders = {Path(os.path.abspath(target.parent)), Path(os.path.realpath(target.parent))}
    for name in named:
        path = Path(os.path.abspath(os.fsdecode(name)))
        if path in folders or any(path in f.parents for f in folders):
            return True
        if any(p.parent in folders and (p.name == target.name or p.name.startswith(f".{target.name}."))
               for p in (path, *path.parents)):
            return True
    return False


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


class _HeldLocks(threading.local):
    """The save locks this thread holds in a :func:`save_lock` block and lends to the save
    inside (their lock files' paths): that save must not ``flock`` again, which the held open
    description would refuse; one lent out is not in the set, so a save inside a save is."""

    def __init__(self):
        self.paths: set[Path] = set()


_held = _HeldLocks()


def _lock_key(target: Path) -> Path:
    return Path(os.path.realpath(target.parent)) / _lock_path(target).name


@contextlib.contextmanager
def save_lock(target: Path | str) -> Iterator[None]:
    """Hold ``target``'s save lock while the block runs, for a caller that makes a model for
    ``target`` before saving it (``fit --out``): a second save to ``target`` meanwhile, from
    another process or thread, is refused at once instead of after its own fit. The save to
    ``target`` inside the block (:func:`save_model_dir`, ``Model.save``) runs under it; a
    second one nested in that save is refused, as without the block."""
    target = Path(target)
    path = _lock_key(target)
    with _flocked(target):
        _held.paths.add(path)
        try:
            yield
        finally:
            _held.paths.discard(path)


@contextlib.contextmanager
def _saving(target: Path) -> Iterator[None]:
    """One save's hold of ``target``'s save lock: this thread's :func:`save_lock` block's,
    lent for the save, else its own (:func:`_flocked`)."""
    path = _lock_key(target)
    if path not in _held.paths:
        with _flocked(target):
            yield
        return
    _held.paths.discard(path)  # lent: a save nested in this one takes the lock itself, refused
    try:
        yield
    finally:
        _held.paths.add(path)


@contextlib.contextmanager
def _flocked(target: Path) -> Iterator[None]:
    """Hold ``target``'s save lock (the ``flock`` of ``.NAME.lock`` beside it, its parent
    folders made) while the block runs, or refuse at once where another open description of
    it (another process, thread or save) holds it. The lock file is removed at the end, also
    on an error; on an error (a refused or failed fit or save) so are the parent folders it
    made that stayed empty: a run that fails creates nothing it did not need."""
    made = list(itertools.takewhile(lambda p: not os.path.lexists(p),
                                    (target.parent, *target.parent.parents)))  # deepest first
    try:
        with _naming_target(target):
            make_folder(target.parent)
            path = _lock_key(target)
            fd, refused = flock_file(path, held=lambda fd: RuntimeError(
                f"{target}: another save to it is in progress (it holds {_lock_path(target)}); "
                f"wait for it to finish"))
    except BaseException:
        _remove_empty(made)
        raise
    if refused is not None:  # a file system without flock: as before the lock existed
        log.debug("%s: cannot be locked (%s); saving unlocked", path, refused)
        os.close(fd)
        fd = None
    try:
        yield
    except BaseException:
        unlock_file(path, fd)
        _remove_empty(made)
        raise
    unlock_file(path, fd)


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are empty; never raises (it runs while an
    error is in flight, which it must not replace)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (a file another run put there) or not ours to remove: keep above


def save_model_dir(target: Path | str, info: ModelInfo, scorer, overwrite: bool = False,
                   extra_files: dict[str, Path] | None = None) -> Path:
    """Write ``info`` and ``scorer`` (and ``extra_files``: relative name -> file to copy, e.g.
    the backbone's ONNX exports) to ``target`` atomically; refuse to overwrite unless asked.
    An extra file that is gone is named before anything of ``target`` is written."""
    target = Path(target)
    gone = [f"{src} (to be saved as {name})" for name, src in (extra_files or {}).items()
            if not os.path.isfile(src)]
    if gone:
        raise FileNotFoundError(f"{', '.join(gone)}: gone; the model is not saved without it")
    with staged_model_dir(target, overwrite) as tmp:
        scorer.save(tmp / SCORER_DIR)
        for name, src in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
        (tmp / MODEL_JSON).write_text(json.dumps(info.to_dict(), indent=2, ensure_ascii=False),
                                      encoding="utf-8")
        write_checksums(tmp)
    log.info("saved model to %s", target)
    return target


def _users_files(folder: Path) -> list[str]:
    """The files in ``folder`` (a model directory) that a model did not write: the user's."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
               if p.is_file() or p.is_symlink()}
    return sorted(present - _model_files(folder))


def _taken_along(staging: Path) -> list[str]:
    """The user's files a replacing run moved into its staging folder: only one it had
    finished writing (its checksum list reads) holds any."""
    try:
        complete = read_checksums(staging) is not None
    except ModelFormatError:
        complete = False
    return _users_files(staging) if complete else []


def _hand_back(folder: Path, target: Path, files: list[str]) -> list[str]:
    """Move ``files`` from ``folder`` back into ``target``; those that could not be."""
    left = []
    for rel in files:
        dst = target / rel
        try:
            if dst.exists() or dst.is_symlink():
                raise FileExistsError(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder / rel, dst)
        except OSError:
            left.append(rel)
    return left


def _replace_model(new: Path, target: Path) -> None:
    """Put the model in ``new`` at ``target``, keeping the files there that a model did not
    write: they are moved into ``new`` first, so that the model folder is swapped whole
    (through a set-aside folder, as :func:`recover_replace` expects). On an error they are
    moved back; a run killed while they lie in ``new`` leaves a complete old model at
    ``target``, or none (the new one, with them, is put back), and the next save or load of
    ``target`` gives them back."""
    foreign = [rel for rel in _users_files(target)
               if not ((new / rel).exists() or (new / rel).is_symlink())]  # else the model's
    moved: list[str] = []
    try:
        for rel in foreign:
            (new / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target / rel, new / rel)
            moved.append(rel)
        _swap(new, target)
    except BaseException:
        if target.is_dir():  # else the new model (with them) is what recover_replace puts back
            _hand_back(new, target, moved)
        raise
    if foreign:
        log.info("%s: kept %d file(s) that are not part of the model: %s", target, len(foreign),
                 ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else ""))


def _swap(new: Path, target: Path) -> None:
    """Replace the model folder ``target`` by ``new``. os.replace cannot replace a non-empty
    folder: the old one is moved aside first, into a locked folder named after ``new`` (what
    recover_replace needs, if killed between)."""
    aside = target.parent / (_aside_prefix(target) + new.name[-8:])
    aside.mkdir()
    try:
        with holding_lock(aside):
            os.replace(target, aside / "model")
            try:
                os.replace(new, target)
            except BaseException:
                os.replace(aside / "model", target)
                raise
            (aside / SWAPPED).touch()  # the aside is now only the old copy: never put back
    finally:
        if target.exists():  # else the old model lies there alone: recover_replace's
            shutil.rmtree(aside / "model", ignore_errors=True)  # before its marker goes
            shutil.rmtree(aside, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def read_model_info(directory: Path | str) -> ModelInfo:
    """Read and check ``model.json`` (format version first, unless the file differs from its
    checksum: then that); nothing else is touched, except that what a killed replacing run
    left is undone first (:func:`recover_replace`)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory}: is a file, not a model directory")
    recover_replace(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: model directory not found")
    path = directory / MODEL_JSON
    if not path.is_file():
        raise ModelFormatError(f"{directory}: not a model directory (no {MODEL_JSON}); "
                               f"create one with 'anomaly-inspect fit'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: unreadable model description ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    version = data.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        _verify_model_json(directory)  # a replaced or damaged file says so, not "re-fit"
        if version is None:
            raise ModelFormatError(f"{path}: not a model description (no format_version); "
                                   f"restore the model directory or re-fit")
        raise ModelFormatError(
            f"{path}: model format version {version!r} is not supported by anomaly-inspect "
            f"{__version__} (reads version {MODEL_FORMAT_VERSION}); re-fit the model with this version"
        )
    info = ModelInfo.from_dict(data, str(path))
    if info.toolkit_version != __version__:
        log.warning("%s: saved by anomaly-inspect %s, loading with %s", path, info.toolkit_version,
                    __version__)
    return info


def checked_model_info(directory: Path | str) -> ModelInfo:
    """``directory``'s ``model.json`` (:func:`read_model_info`) once every file of it verifies
    against its checksums (:func:`verify_model_files`): a model's files, checked without
    building its backbone."""
    info = read_model_info(directory)
    verify_model_files(directory)
    return info


def _verify_model_json(directory: Path) -> None:
    """Refuse ``model.json`` where the checksum list names it and it differs; a list this
    version cannot read is left to the format version check (a newer model's may differ)."""
    try:
        want = (read_checksums(directory) or {}).get(MODEL_JSON)
    except ModelFormatError:
        return
    if want is not None:
        _verify_file(directory, MODEL_JSON, want)


def check_backbone_checksum(directory: Path | str, info: ModelInfo, checksum: str) -> None:
    """Refuse a backbone whose weights differ from the ones the model was fitted with."""
    saved = info.backbone.get("weights", {}).get("checksum")
    if saved != checksum:
        src = info.backbone.get("weights", {})
        raise ModelFormatError(
            f"{directory}: backbone weights differ from the ones this model was fitted with "
            f"(backbone {info.backbone.get('name')}, weights {src.get('kind')} {src.get('location')}: "
            f"saved checksum {str(saved)[:16]}..., loaded {checksum[:16]}...); scores would be "
            f"meaningless; install the same weights or re-fit"
        )
