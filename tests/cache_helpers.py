"""Helpers of the ``anomaly-inspect cache`` tests: a file of a given size (and age) in a cache
tree, and the command run in-process with its exit code and output."""

from __future__ import annotations

import os
import time
from pathlib import Path

from anomaly_inspect.cli import main


def cache_file(path: Path, size: int = 1000, age_s: float = 0.0) -> Path:
    """``size`` bytes at ``path`` (its folders made), last written ``age_s`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def run_cache(capsys, *argv: str) -> tuple[int, str, str]:
    """``anomaly-inspect cache ARGV``: (exit code, stdout, stderr)."""
    try:
        rc = main(["cache", *argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err
