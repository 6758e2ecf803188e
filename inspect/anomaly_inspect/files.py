"""Writing a file so that a reader (or the next run) finds the old file or the new one, never
half of one: the one way every record, report, cache entry and export is written.

The data go to a temporary name beside the target, unique to this writer (two runs writing the
same file never share or remove each other's), which is renamed onto the target only once the
writing has finished; if it fails, the temporary file is removed and the target is untouched.
Rename is atomic on one file system; there is no fsync (a crash of the process, not of the
machine, is what this guards against; saved models fsync their tree, ``screening/model_dir``).
Folders are made with :func:`make_folder`, which names a file standing where a folder should be.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    name without it) and gets the permissions a plain ``open`` would give (``mkstemp``'s are
    owner-only)."""
    path = Path(path)
    make_folder(path.parent)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str, errors: str = "strict") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=errors)
    return Path(path)


def write_json(path: Path | str, data, indent: int | None = 2, **dumps) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (``dumps``: e.g. ``default=str``)."""
    return write_text(path, json.dumps(data, indent=indent, **dumps))


def _umask() -> int:
    """The process's umask, read without setting it (setting it to read it back would race
    with other threads creating files)."""
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
