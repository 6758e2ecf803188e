"""Writing a file so that a reader (or the next run) finds the old file or the new one, never
half of one: the one way every record, report, cache entry and export is written.

The data go to a temporary name beside the target, unique to this writer (two runs writing the
same file never share or remove each other's), which is renamed onto the target only once the
writing has finished; if it fails, the temporary file is removed and the target is untouched.
Rename is atomic on one file system; there is no fsync (a crash of the process, not of the
machine, is what this guards against; saved models fsync their tree, ``screening/model_dir``).
Folders are made with :func:`make_folder`, which names a file standing where a folder should be.
Folders built beside their target and renamed into place (saved models, tune's cache entries) are
``flock``-ed while a run builds them (:func:`lock_folder`), so the next run can tell those a
``kill -9`` left from live ones and remove them (:func:`remove_stale_folders`). A lock file (one
writer per output folder, one save per model folder) is taken with :func:`flock_file` and
released with :func:`unlock_file`.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: building folders are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: a building folder younger than this is never removed as stale (its run locks it an instant
#: after making it)
STALE_AFTER_S = 60.0


def make_folder(folder: Path | str) -> Path:
    """``mkdir -p folder``, refusing in one line a path below a file."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "a file" if p.exists() else "a dangling link"
                raise NotADirectoryError(f"{p}: is {what}, not a folder")
            break
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; moved onto ``path`` when the block
    ends, removed if it raises. It ends with ``path``'s suffix (``np.savez`` adds ``.npz`` to a
    name without it) and gets the permissions of the file it replaces (a private file stays
    private), or for a new file those a plain ``open`` would give (``mkstemp``'s are
    owner-only). An ``OSError`` that names no file, or only the temporary one (a full disk, a
    folder made read-only), is raised naming ``path`` (:func:`write_error`); so is a full disk
    or read-only folder met copying into the temporary file (``shutil.copyfile`` names the
    source, then it: :func:`_writing`). A symbolic link is written through: its target gets the
    content and the link stays (a ``latest.json`` pointing into a dated folder)."""
    shown = path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    make_folder(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    except OSError as exc:  # a read-only folder: its error names the temporary file
        if exc.errno is not None and exc.filename2 is None:
            raise write_error(exc, shown) from None
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):  # a read-only folder: its error must not replace this one
            tmp.unlink()
        if isinstance(exc, OSError) and _writing(exc, name):
            raise write_error(exc, shown) from None
        raise


def _mode_for(path: Path) -> int:
    """The permission bits a new file written to ``path`` gets: those of the file there now,
    or where there is none those a plain ``open`` gives."""
    try:
        return os.stat(path).st_mode & 0o777  # not set-id bits onto new content
    except OSError:  # none there (yet), or not to be looked at: as a new file
        return 0o666 & ~current_umask()


#: errors writing a file that only another device or folder avoids, whatever the copy's source
FULL_OR_READ_ONLY = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS")
                              if hasattr(errno, n))


def _writing(exc: OSError, tmp: str) -> bool:
    """``exc`` comes from writing the temporary file ``tmp``: it names no file or only ``tmp``,
    or (a copy into it, which names its source first) is a full disk or read-only folder that
    names ``tmp`` second; a copy that failed reading its source is not (both paths say where)."""
    if exc.errno is None:
        return False
    if exc.filename2 is not None:
        return exc.errno in FULL_OR_READ_ONLY and os.fspath(exc.filename2) == tmp
    return exc.filename is None or os.fspath(exc.filename) == tmp


def write_error(exc: OSError, path: Path | str) -> OSError:
    """``exc``, raised writing ``path``, as one line naming ``path``; its ``errno`` (and the
    type Python gives that errno, e.g. ``PermissionError``) kept for the callers that test them."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text = (f"{path}: no space left on the device to write it; free space there or write "
                f"to another folder")
    else:
        text = f"{path}: cannot write it ({exc.strerror or exc})"
    return reworded(exc, text)


def reworded(exc: OSError, text: str) -> OSError:
    """An ``OSError`` saying ``text`` (no ``[Errno N]`` prefix), with ``exc``'s ``errno`` and
    the type Python gives that errno (e.g. ``PermissionError``), for the callers that test them."""
    named = type(OSError(exc.errno, text))(text)
    named.errno = exc.errno  # not strerror: with it set, str() would be "[Errno N] strerror"
    return named


#: a temporary file a killed run left is removed once it is older than this (no file is
#: written that long before it is renamed into place)
STALE_TEMP_AFTER_S = 3600.0
#: :func:`replacing`'s temporary files: ``.<name>.<8 of mkstemp's letters>.tmp<suffix>``,
#: where ``<suffix>`` is ``<name>``'s (checked by :func:`_replacing_temp`)
_REPLACING = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")


def _replacing_temp(name: str) -> bool:
    """Whether ``name`` is that of a temporary file :func:`replacing` writes."""
    m = _REPLACING.fullmatch(name)
    return m is not None and (m[2] or "") == Path(m[1]).suffix


def remove_stale_temp_files(folder: Path | str) -> None:
    """Remove the temporary files :func:`replacing` writes in ``folder`` (a feature or
    ONNX cache) that are older than :data:`STALE_TEMP_AFTER_S`: left by a run killed while it
    wrote them (a feature array, an export), each as large as the file it was to become. One
    that cannot be looked at or removed (a read-only folder) is left alone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    removed = []
    for entry in entries:
        if not _replacing_temp(entry.name):
            continue
        try:
            if (not entry.is_file(follow_symlinks=False)
                    or time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_TEMP_AFTER_S):
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            continue
    if removed:
        log.info("%s: removed %d temporary file(s) left by a killed run: %s", folder, len(removed),
                 ", ".join(removed))


def not_utf8(path: Path | str, exc: UnicodeDecodeError, what: str = "") -> str:
    """The one-line reason a text file ``path`` (``what``: e.g. "labels CSV") could not be
    read as UTF-8, with where and how to fix it (a spreadsheet's Latin-1 or UTF-16 export)."""
    return (f"{path}: {what + ' is ' if what else ''}not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}, 0x{exc.object[exc.start]:02x}); save it as UTF-8 (Excel: 'CSV UTF-8')")


def stream_sha256(f: BinaryIO) -> str:
    """The sha256 hex digest of what is left to read in the binary file ``f``, read 1 MiB at
    a time (``hashlib.file_digest`` is Python 3.11+)."""
    h = hashlib.sha256()
    while block := f.read(1 << 20):
        h.update(block)
    return h.hexdigest()


def file_sha256(path: Path | str) -> str:
    """The sha256 hex digest of the file at ``path``."""
    with open(path, "rb") as f:
        return stream_sha256(f)


@functools.cache
def _sha256_as_of(path: str, size: int, mtime_ns: int) -> str:
    """``path``'s sha256 while its size and modification time are these."""
    return file_sha256(path)


def content_sha256(path: Path | str) -> str:
    """The sha256 of the file at ``path`` (links followed), read once per process while its
    size and modification time stay: fit's split, its calibration check and the distributed
    fit's compare the same files, and fit records every training image's digest."""
    st = os.stat(path)
    return _sha256_as_of(os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _same_bytes(paths: Sequence[Path | str], wanted: Callable[[list[int]], bool]) -> list[list[int]]:
    """The positions in ``paths`` of files holding the same bytes, in groups (each ascending,
    the groups by their first position) that ``wanted`` keeps; only files whose size is that
    of a group ``wanted`` keeps are hashed. A file that cannot be read is in none."""
    by_size: dict[int, list[int]] = {}
    for i, p in enumerate(paths):
        with suppress(OSError):
            by_size.setdefault(os.stat(p).st_size, []).append(i)
    groups = []
    for same_size in by_size.values():
        if not wanted(same_size):
            continue
        by_digest: dict[str, list[int]] = {}
        for i in same_size:
            with suppress(OSError):
                by_digest.setdefault(content_sha256(paths[i]), []).append(i)
        groups += [g for g in by_digest.values() if wanted(g)]
    return sorted(groups)


def same_bytes(paths: Sequence[Path | str]) -> list[list[int]]:
    """The positions in ``paths`` of byte-identical files (copies, or one file by two paths), in
    groups of two or more, each ascending, ordered by their first position. Only files whose
    sizes agree are hashed (:func:`content_sha256`); one that cannot be read is in none."""
    return _same_bytes(paths, lambda group: len(group) > 1)


def copies_across(these: Sequence[Path | str], those: Sequence[Path | str]) -> list[tuple[int, int]]:
    """``(i, j)`` for each of ``these`` that holds the bytes of one of ``those`` (a copy, or the
    same file by another path): ``j`` the first such, in the order of ``these``. Only files whose
    size is on both sides are hashed; one that cannot be read is a copy of none."""
    n = len(these)
    groups = _same_bytes([*these, *those], lambda group: group[0] < n <= group[-1])
    return sorted((i, next(j for j in g if j >= n) - n) for g in groups for i in g if i < n)


def write_text(path: Path | str, text: str, errors: str = "strict") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=errors)
    return Path(path)


def write_json(path: Path | str, data, indent: int | None = 2, **dumps) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (``dumps``: e.g. ``default=str``)."""
    return write_text(path, json.dumps(data, indent=indent, **dumps))


def current_umask() -> int:
    """The process's umask, read without setting it where ``/proc`` says it (setting it to read
    it back races with other threads creating files; done only where ``/proc`` is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def lock_folder(folder: Path | str) -> int | None:
    """An open descriptor of ``folder`` holding its exclusive ``flock`` (released when it is
    closed or the process dies); None where another process holds it, it is gone, or it cannot
    be locked."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # gone, or not readable
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live run, or a file system without flock
        os.close(fd)
        return None
    return fd


@contextmanager
def holding_lock(folder: Path | str) -> Iterator[None]:
    """Hold ``folder``'s :func:`lock_folder` lock while the block runs."""
    fd = lock_folder(folder)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def flock_file(path: Path | str, held: Callable[[int], BaseException], writable: bool = False,
               mode: int = 0o666) -> tuple[int, OSError | None]:
    """Open lock file ``path`` (made with ``mode``, read-write if ``writable``) and take its
    exclusive ``flock`` without waiting: the open descriptor and None once held; where it cannot
    be taken (a file system or platform without ``flock``) the open, unlocked descriptor and the
    reason, for the caller to decide how to go on. Where another open description holds it, the
    exception ``held`` makes of the descriptor (it may read the holder's content from it) is
    raised once that is closed. A file its holder removed meanwhile (:func:`unlock_file`) is
    opened again, so the descriptor is always of the file now at ``path``."""
    flags = os.O_RDWR if writable else os.O_RDONLY
    while True:
        fd = os.open(path, flags | os.O_CREAT, mode)
        refused = None
        try:
            if fcntl is None:  # pragma: no cover - Windows
                raise OSError(errno.ENOSYS, "flock is not available on this platform")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                exc = held(fd)
            finally:
                os.close(fd)
            raise exc from None
        except OSError as exc:
            refused = exc
        try:  # the holder may have removed the file between our open and flock: retry
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd, refused
        except FileNotFoundError:
            pass
        os.close(fd)


def unlock_file(path: Path | str, fd: int | None) -> None:
    """Release a :func:`flock_file` lock: remove ``path`` while still holding it (an opener
    waiting for it then sees a new file), then close ``fd`` (None: none left open). A file
    that cannot be removed is left (the next run takes it over) without an error: a release
    runs in ``finally`` blocks, where it would replace the error that ended the run."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a folder made read-only meanwhile: never hides the error in flight
        log.debug("%s: lock file left (%s); the next run takes it over", path, exc)
    if fd is not None:
        os.close(fd)


def remove_stale_folders(parent: Path | str, names: re.Pattern,
                         keep: Callable[[Path], bool] | None = None) -> None:
    """Remove the folders in ``parent`` whose names match ``names`` and that no live process
    holds (:func:`lock_folder`): left by a run killed with SIGKILL. One that is locked, younger
    than :data:`STALE_AFTER_S`, on a file system without ``flock``, or that ``keep`` says holds
    something to keep is left alone."""
    removed = []
    try:
        siblings = sorted(Path(parent).iterdir())
    except OSError:
        return
    for path in siblings:
        try:
            if (not names.fullmatch(path.name) or path.is_symlink() or not path.is_dir()
                    or time.time() - path.stat().st_mtime < STALE_AFTER_S):
                continue
            fd = lock_folder(path)
        except OSError:
            continue
        if fd is None:
            continue
        if keep is not None and keep(path):
            os.close(fd)
            continue
        try:
            shutil.rmtree(path)
            removed.append(path.name)
        except OSError as exc:
            log.warning("%s: cannot remove the temporary folder of a killed run (%s)", path, exc)
        finally:
            os.close(fd)
    if removed:
        log.info("%s: removed %d temporary folder(s) left by a killed run: %s", parent,
                 len(removed), ", ".join(removed))


def being_written(path: Path | str) -> bool:
    """Whether ``path`` is a write still in progress, which a clean-up must leave: a temporary
    file of :func:`replacing` younger than :data:`STALE_TEMP_AFTER_S`, or a work folder
    (:data:`WORK_FOLDERS`) that a live run holds (:func:`lock_folder`; also where it cannot be
    locked) or that is younger than :data:`STALE_AFTER_S`. Links are not followed."""
    path = Path(path)
    temp, work = _replacing_temp(path.name), WORK_FOLDERS.fullmatch(path.name)
    if not temp and work is None:
        return False
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    age = time.time() - st.st_mtime
    if temp and stat.S_ISREG(st.st_mode):
        return age < STALE_TEMP_AFTER_S
    if work is None or not stat.S_ISDIR(st.st_mode):
        return False
    if age < STALE_AFTER_S:
        return True
    fd = lock_folder(path)
    if fd is None:
        return True
    os.close(fd)  # a killed run's: it never becomes live again
    return False


@contextmanager
def work_folder(target: Path | str) -> Iterator[Path]:
    """A temporary folder beside ``target`` (``.<name>.<pid>.<hex>.tmp``), locked while the
    block runs and removed when it ends. The work folders killed runs left in the same folder
    (of any target: a run killed working on one may never come back to it) are removed first."""
    target = Path(target)
    make_folder(target.parent)
    remove_stale_folders(target.parent, WORK_FOLDERS)
    tmp = _sibling(target, "tmp")
    with holding_lock(tmp):
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def new_entry(directory: Path) -> Iterator[Path]:
    """A :func:`work_folder` beside cache entry ``directory`` to build it in, renamed to
    ``directory`` when the block ends; if another run has put the entry there meanwhile, theirs
    is kept and this copy removed. Removed if the block raises; a full disk is one line naming
    ``directory``."""
    directory = Path(directory)
    with work_folder(directory) as tmp:
        try:
            yield tmp
            try:
                os.rename(tmp, directory)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise  # else another run's complete entry won the race: ours goes
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(f"{directory}: no space left on the device for this cache entry; "
                              f"free space there or use another cache folder") from None
            raise


def cached_entry(directory: Path, read: Callable[[Path], T | None], build: Callable[[Path], object],
                 what: str, elsewhere: str = "use another cache folder") -> T:
    """Cache entry ``directory`` as ``read`` gives it back, built first where it is missing or
    broken (``read`` returns None): a broken or unfinished one is removed, the new one is built
    by ``build`` in a :func:`new_entry` folder and read back. ``what`` names the entry in the
    error raised if even the new entry cannot be read back (another run replaced it meanwhile),
    or if its cache folder cannot be written (read-only, no permission; a complete entry is
    read without writing): then ``elsewhere`` says how to choose another folder."""
    directory = Path(directory)
    value = read(directory)
    if value is not None:
        return value
    try:
        if directory.exists() or directory.is_symlink():
            discard_entry(directory)
        with new_entry(directory) as tmp:
            build(tmp)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and _names(exc, directory.parent):
            raise OSError(f"{directory.parent}: cannot write {what} there ({exc.strerror}: "
                          f"{exc.filename}); {elsewhere}") from None
        raise
    value = read(directory)
    if value is None:
        raise OSError(f"{directory}: {what} there is not the one just built (another run put "
                      f"other data there meanwhile, or it cannot be read back); run again")
    return value


def overlaps(a: Path, b: Path) -> bool:
    """Whether paths ``a`` and ``b`` (as given: resolve them first where links count) are one,
    or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def _names(exc: OSError, folder: Path) -> bool:
    """``exc`` is about ``folder``, something in it, or one of its parents (being made)."""
    if exc.filename is None:
        return False
    return overlaps(Path(os.path.abspath(exc.filename)), Path(os.path.abspath(folder)))


def discard_entry(directory: Path) -> None:
    """Remove a broken cache entry: renamed aside first, so no run sees it half removed."""
    directory = Path(directory)
    aside = _sibling(directory, "old")
    with holding_lock(aside):
        with suppress(FileNotFoundError):  # another run removed it first
            os.rename(directory, aside / "entry")
        shutil.rmtree(aside, ignore_errors=True)


#: the names :func:`_sibling` gives work folders and set-aside entries: ``.<name>.<pid>.<hex>.<kind>``
WORK_FOLDERS = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.(tmp|old)")


def _sibling(directory: Path, kind: str) -> Path:
    """A new empty folder beside ``directory``, unique to this call (permissions as ``mkdir``'s)."""
    while True:
        path = directory.parent / f".{directory.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
