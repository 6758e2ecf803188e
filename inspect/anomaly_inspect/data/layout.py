"""Listing image files and the errors raised for bad dataset layouts."""

from __future__ import annotations

import glob
from pathlib import Path

from .image_io import is_image_file


class DatasetLayoutError(ValueError):
    """A dataset folder that does not have the expected structure."""


def list_images(folder: Path | str, recursive: bool = True) -> list[Path]:
    """Image files under ``folder``, sorted; raises if the folder is missing."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))


def expand_inputs(inputs: list[str | Path], recursive: bool = True) -> list[Path]:
    """Resolve a mix of files, folders and glob patterns into image paths.

    Explicitly named files are kept even if their extension is unusual, so
    that a bad file becomes a per-image error instead of vanishing.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in list_images(p, recursive=recursive):
                add(f)
        elif p.exists():
            add(p)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise FileNotFoundError(f"{item}: glob pattern matched no files")
            for m in matches:
                if m.is_dir():
                    for f in list_images(m, recursive=recursive):
                        add(f)
                elif is_image_file(m):
                    add(m)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return out
