"""Resource figures for reports: peak resident memory and wall-clock timing."""

from __future__ import annotations

import ctypes
import functools
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far, in MiB (``ru_maxrss``: it never
    falls, so a figure taken after an earlier, larger run in the same process is that run's
    peak; a fresh process per measurement gives each its own)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


STAGES = ("decode", "backbone", "embed", "fit", "search", "maps")  # fit: PatchCore's coreset


class StageTimes:
    """Wall-clock seconds per pipeline stage, summed over batches (``with times("embed"): ...``).

    ``decode`` is the time the pipeline waited for decoded batches (decoding runs
    ahead in worker threads, so the time it took there is mostly hidden).
    """

    def __init__(self):
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def to_dict(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Per-batch arrays of megabytes, allocated and freed from several threads, fragment glibc's
    heaps, so a long streamed fit's RSS creeps up although what it holds is bounded (capped
    fit, 900 vs 200 images: +8.6 % without, +5.5 % with; docs/coreset.md). Costs about 1 %."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
