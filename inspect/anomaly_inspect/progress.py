"""Progress reporting (count, rate, ETA) that can be silenced with --quiet."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """A thin tqdm wrapper; ``enabled=False`` makes every call a no-op."""

    def __init__(self, total: int | None, desc: str, unit: str = "img", enabled: bool = True):
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                 smoothing=0.1, mininterval=0.5)
            if enabled
            else None
        )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def grow(self, n: int) -> None:
        """Add ``n`` to the total (work found to be needed on the way; negative: an estimate
        corrected)."""
        if self._bar is not None and n:
            self._bar.total = (self._bar.total or 0) + n
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
