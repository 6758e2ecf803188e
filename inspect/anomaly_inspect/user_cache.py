"""The user cache as a whole (``$ANOMALY_INSPECT_CACHE``, else ``~/.cache/anomaly_inspect``):
what each of its folders holds, and emptying them (``anomaly-inspect cache``).

Its folders: ``onnx`` (backbone exports and cards, :mod:`.features.runtime`), ``tune`` (stage maps and
synthetic-anomaly sets, grouped in ``maps`` and ``synthetic``) and ``ood`` (ood-benchmark's
features, and its synthetic sets in ``synthetic``). Runs add to them and nothing prunes them.
An *entry* is a file or folder in a cache folder, or in one of its :data:`GROUPS`. A cache
folder may be a link to a folder elsewhere (moved to a bigger disk): runs read and write
through it, and it is listed by its target's use.

Listing never sizes what is not a cache folder (a root set to a project folder by mistake is
not walked) and refuses the home folder and ``/``. Emptying is careful in four ways. It
refuses a root that holds anything but the folders :data:`CACHE_FOLDERS` (and the home folder
and ``/`` themselves), so that a root set to ``~`` by mistake is never emptied. It removes
only what lies below the root: a symbolic link is removed as a link, never followed, and a
cache folder that is a link is never emptied (naming it refuses the whole request). It leaves
the writes in progress (:func:`.files.being_written`: an export, an entry being built) and an
entry holding one (an ood synthetic set with a split being built), and the folders and groups
themselves (a run may be about to build an entry in them). Runs reading the cache meanwhile
count an entry removed under them as a miss and make it again; tune's synthetic-anomaly
images are the exception (a tune run reads them by path until it ends).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .files import being_written, reworded

#: the environment variable that moves the user cache
CACHE_ENV = "ANOMALY_INSPECT_CACHE"
#: the folders runs write in the user cache
CACHE_FOLDERS = ("onnx", "tune", "ood")
#: the folders of a cache folder whose items are its entries (tuning/tune.py, tuning/judge.py,
#: evaluation/ood_benchmark.py): named, since a stray file in one must not make it an entry
GROUPS = ("tune/maps", "tune/synthetic", "ood/synthetic")


def user_cache_dir(name: str) -> Path:
    """The user cache's folder ``name``: ``$ANOMALY_INSPECT_CACHE``/NAME, else
    ``~/.cache/anomaly_inspect/NAME``, read when called (the environment may change)."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "anomaly_inspect"
    return base / name


class CacheRootError(ValueError):
    """The cache root is not a folder, or does not look like a cache (not emptied)."""


def cache_root() -> Path:
    """The user cache's root, read when called (the environment may change)."""
    return user_cache_dir(CACHE_FOLDERS[0]).parent


@dataclass(frozen=True)
class FolderUsage:
    """One item of the cache root: ``entries``, ``size`` (bytes on disk) and ``last_written``
    (the latest modification time below it: reading an entry does not change it; None where
    it is empty). ``cache_folder``: one of :data:`CACHE_FOLDERS`, a folder or a link to one
    (``link_to``: its target), sized; any other item is one entry, not sized (0 bytes, never
    written), among them a cache folder's name that is a link to a folder that is missing (an
    unmounted disk; ``link_to``: where it leads)."""

    name: str
    path: Path
    entries: int
    size: int
    last_written: float | None
    cache_folder: bool
    link_to: Path | None = None


def human_size(n: int) -> str:
    """``n`` bytes as e.g. "412.3 MB" (powers of 1000)."""
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _check_root(root: Path) -> bool:
    """Whether ``root`` is there (a folder); :class:`CacheRootError` where it is something else."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise CacheRootError(f"{root}: not a folder")
    return True


def _items(folder: Path) -> list[os.DirEntry]:
    """``folder``'s items by name; one that cannot be listed is an OSError naming it."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return []  # removed meanwhile (a run discarding a broken entry)
    except OSError as exc:
        raise reworded(exc, f"{folder}: cannot list it ({exc.strerror or exc})") from None


def _is_group(entry: os.DirEntry, name: str) -> bool:
    """``entry``, at ``name`` below the root (``tune/maps``), is one of :data:`GROUPS`, a folder
    (a link in its place is an entry: removed as a link)."""
    return name in GROUPS and entry.is_dir(follow_symlinks=False)


def _entries(folder: Path, name: str) -> int:
    """The entries of ``folder``, at ``name`` below the root."""
    return sum(_entries(Path(e.path), f"{name}/{e.name}") if _is_group(e, f"{name}/{e.name}") else 1
               for e in _items(folder))


def _holds_write(folder: Path) -> bool:
    """Whether a write in progress (:func:`.files.being_written`) lies anywhere below ``folder``
    (links not followed): the entry is left whole."""
    return any(being_written(Path(e.path))
               or (e.is_dir(follow_symlinks=False) and _holds_write(Path(e.path)))
               for e in _items(folder))


def _below(path: Path) -> Iterator[os.stat_result]:
    """The ``lstat`` of ``path`` and of everything below it, links not followed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    yield st
    if stat.S_ISDIR(st.st_mode):
        for e in _items(path):
            yield from _below(Path(e.path))


def _disk_usage(stats: Iterable[os.stat_result]) -> tuple[int, float | None]:
    """Bytes on disk (each inode once) and the latest modification time of ``stats``."""
    seen, size, last = set(), 0, None
    for st in stats:
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            size += getattr(st, "st_blocks", 0) * 512 or st.st_size
        last = st.st_mtime if last is None else max(last, st.st_mtime)
    return size, last


def _mistaken_root(root: Path) -> str | None:
    """Why ``root`` is never a cache (the home folder, the file system root), or None."""
    real = Path(os.path.realpath(root))
    if real == Path(real.anchor):
        return "it is the file system root"
    if real == Path(os.path.realpath(Path.home())):
        return "it is the home folder"
    return None


def _link_target(root: Path, e: os.DirEntry) -> Path | None:
    """Where the cache folder ``e``, a link, leads: None where it is no link, or leads to no
    folder, or to the home folder, ``/``, the root or a folder above it (never walked)."""
    if not (e.name in CACHE_FOLDERS and e.is_symlink() and e.is_dir()):
        return None
    target = Path(os.path.realpath(e.path))
    real_root = Path(os.path.realpath(root))
    if _mistaken_root(target) or target == real_root or target in real_root.parents:
        return None
    return target


def _missing_target(e: os.DirEntry) -> Path | None:
    """Where the cache folder ``e`` leads where it is a link to something missing (a folder
    moved to a disk that is not mounted now), else None."""
    if not (e.name in CACHE_FOLDERS and e.is_symlink()):
        return None
    try:
        os.stat(e.path)
    except FileNotFoundError:
        return Path(os.path.realpath(e.path))
    except OSError:  # a loop, a part that is a file: not missing
        pass
    return None


def missing_link(target: Path) -> str:
    """How a cache folder that is a link to the missing ``target`` is named (listing, refusal)."""
    return f"a link to {target}, which is missing"


def cache_usage(root: Path | str) -> list[FolderUsage]:
    """Every item of ``root``: :data:`CACHE_FOLDERS` first (a link to a folder by its target's
    use), then the others by name (one entry each, not sized: a mistaken root is not walked);
    [] where ``root`` is absent. :class:`CacheRootError` for the home folder and ``/``."""
    root = Path(root)
    if not _check_root(root):
        return []
    why = _mistaken_root(root)
    if why:
        raise CacheRootError(f"{root}: does not look like an anomaly-inspect cache ({why}); not "
                             f"listed: name the cache root with --cache-dir or ${CACHE_ENV}")
    rank = {name: i for i, name in enumerate(CACHE_FOLDERS)}
    out = []
    for e in sorted(_items(root), key=lambda e: (rank.get(e.name, len(rank)), e.name)):
        path, link = Path(e.path), _link_target(root, e)
        if (e.name in rank and e.is_dir(follow_symlinks=False)) or link is not None:
            size, last = _disk_usage(s for i in _items(path) for s in _below(Path(i.path)))
            out.append(FolderUsage(e.name, path, _entries(path, e.name), size, last, True, link))
        else:
            out.append(FolderUsage(e.name, path, 1, 0, None, False, _missing_target(e)))
    return out


def summed(usages: Sequence[FolderUsage], name: str = "total") -> FolderUsage:
    """The total of ``usages``, as one row."""
    lasts = [u.last_written for u in usages if u.last_written is not None]
    return FolderUsage(name, Path(), sum(u.entries for u in usages), sum(u.size for u in usages),
                       max(lasts) if lasts else None, False)


def check_clearable(root: Path | str, names: Collection[str] = CACHE_FOLDERS) -> None:
    """Refuse (:class:`CacheRootError`) a root that does not look like a cache: the home folder
    or ``/``, or one holding anything but the folders :data:`CACHE_FOLDERS` (a link to a folder
    counts as one, and a link to a missing folder, an unmounted disk); or one whose cache
    folder among ``names`` is a link (never emptied)."""
    root = Path(root)
    why, rule = _mistaken_root(root), (f"--clear empties only a folder holding nothing but the "
                                       f"folders {', '.join(CACHE_FOLDERS)}")
    for e in [] if why else _items(root):
        link, missing = _link_target(root, e), _missing_target(e)
        if e.name not in CACHE_FOLDERS:
            why = f"it holds {e.name!r}"
        elif link is not None and e.name in names:
            why, rule = (f"its {e.name!r} is a link to {link}",
                         f"--clear never empties a folder through a link: name only the other "
                         f"folders, or empty {link} yourself")
        elif missing is not None:
            if e.name in names:
                why, rule = (f"its {e.name!r} is {missing_link(missing)}",
                             "--clear never empties a folder through a link: name only the "
                             "other folders")
        elif not e.is_dir(follow_symlinks=False) and link is None:
            why = (f"its {e.name!r} is a link to {os.path.realpath(e.path)}, not a cache folder"
                   if e.is_symlink() else f"its {e.name!r} is a file")
        if why:
            break
    if why:
        raise CacheRootError(
            f"{root}: does not look like an anomaly-inspect cache ({why}); nothing deleted: {rule}")


@dataclass
class Cleared:
    """What emptying one cache folder did: ``freed`` bytes in ``entries`` entries removed,
    ``left`` writes in progress left, ``failed`` (path, reason) of what could not be removed;
    ``present``: False where the folder was absent."""

    name: str
    present: bool = True
    freed: int = 0
    entries: int = 0
    left: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def clear(root: Path | str, names: Iterable[str]) -> list[Cleared]:
    """Empty the cache folders ``names`` (of :data:`CACHE_FOLDERS`, or "all") of ``root``,
    after :func:`check_clearable`; [] where ``root`` is absent."""
    root = Path(root)
    wanted = list(dict.fromkeys(n for name in names
                                for n in (CACHE_FOLDERS if name == "all" else (name,))))
    unknown = [n for n in wanted if n not in CACHE_FOLDERS]
    if unknown:
        raise CacheRootError(f"not a cache folder: {', '.join(unknown)} (one of "
                             f"{', '.join(CACHE_FOLDERS)}, or all)")
    if not _check_root(root):
        return []
    check_clearable(root, wanted)
    out = []
    for name in wanted:
        done = Cleared(name, present=(root / name).is_dir())
        if done.present:
            _empty(root / name, name, done)
        out.append(done)
    return out


def _empty(folder: Path, name: str, done: Cleared) -> None:
    """Remove the entries of ``folder``, at ``name`` below the root (those of its groups too),
    leaving writes in progress and the entries that hold one."""
    for e in _items(folder):
        path, sub = Path(e.path), f"{name}/{e.name}"
        if _is_group(e, sub):
            _empty(path, sub, done)
        elif being_written(path) or (e.is_dir(follow_symlinks=False) and _holds_write(path)):
            done.left += 1
        else:
            size, _ = _disk_usage(_below(path))
            failed = _remove(path, e.is_dir(follow_symlinks=False))
            if failed:
                done.failed += failed
            else:
                done.freed += size
                done.entries += 1


def _remove(path: Path, folder: bool) -> list[tuple[Path, str]]:
    """Remove the file, link or ``folder`` ``path`` (links inside it removed, not followed):
    (path, reason) of what could not be; what a run removed meanwhile is no failure."""
    failed: list[tuple[Path, str]] = []

    def note(func, failed_path, exc) -> None:  # exc: the exception (onexc) or its exc_info
        exc = exc if isinstance(exc, BaseException) else exc[1]
        if not isinstance(exc, FileNotFoundError):
            failed.append((Path(failed_path), exc.strerror or str(exc)))

    if folder:
        shutil.rmtree(path, **({"onexc": note} if sys.version_info >= (3, 12) else {"onerror": note}))
    else:
        try:
            os.unlink(path)
        except OSError as exc:
            note(os.unlink, path, exc)
    return failed
