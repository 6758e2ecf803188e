"""Progress reporting (count, rate, ETA) that can be silenced with --quiet.

On a terminal tqdm redraws its bar in place; to a log file or a CI pipe it writes one plain line
at the start, at most one per ``LOG_INTERVAL_S`` and one at close (redraws every 0.5 s would fill
the log with carriage-return lines)."""

from __future__ import annotations

import itertools
import sys
import threading
import weakref
from typing import TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
#: set to 1 to get the traceback of an error instead of its one line (the CLI), and the errors
#: Ray Data logs on the console (the ray engine)
DEBUG_ENV = "ANOMALY_INSPECT_DEBUG"


class _Lines:
    """A stream that turns tqdm's redraws ('\\r' + bar + padding) into newline-terminated lines;
    the bare newline tqdm ends a bar with, and blank clears, are dropped."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, s: str) -> None:
        line = s.replace("\r", "").strip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        getattr(self._stream, "flush", lambda: None)()


class Progress:
    """A thin tqdm wrapper; ``enabled=False`` makes every call a no-op. A bar without a total
    is drawn at its first ``update`` or ``grow``: tqdm draws when made, and fit's "coreset" bar,
    made before the training images are extracted, showed an empty "coreset: 0pt" above them."""

    def __init__(self, total: int | None, desc: str, unit: str = "img", enabled: bool = True):
        self._bar = None
        self._tty = False
        self._settings: dict | None = None  # tqdm's arguments; None: disabled
        if enabled:
            self._tty = getattr(sys.stderr, "isatty", lambda: False)()
            # a log: no in-place redraws, no cursor moves for nested bars (position 0), and no
            # extra refresh from tqdm's monitor before the interval (maxinterval)
            kwargs = ({"file": sys.stderr, "dynamic_ncols": True, "mininterval": 0.5} if self._tty
                      else {"file": _Lines(sys.stderr), "position": 0,
                            "mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S})
            self._settings = dict(total=total, desc=desc, unit=unit, smoothing=0.1, **kwargs)
            if total is not None:
                self._open()

    def _open(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(**self._settings)
            with _LOCK:
                _DRAWN[self] = (threading.get_ident(), next(_ORDER))
        return self._bar

    def update(self, n: int = 1) -> None:
        if self._settings is not None:
            self._open().update(n)

    def grow(self, n: int) -> None:
        """Add ``n`` to the total (work found to be needed on the way; negative: an estimate
        corrected). A log shows the new total in its next line; a bar not drawn yet is drawn
        with it."""
        if self._settings is None or not n:
            return
        if self._bar is None:
            self._settings["total"] = n
            self._open()
        else:
            self._bar.total = (self._bar.total or 0) + n
            if self._tty:
                self._bar.refresh()

    def close(self) -> None:
        with _LOCK:
            _DRAWN.pop(self, None)
        if self._bar is not None:
            if not self._tty:  # a log: the closing line only where the last one is not it
                self._bar.leave = self._bar.last_print_n < self._bar.n
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: the bars drawn and not closed yet: bar -> (the thread that drew it, its place in draw order)
_DRAWN: weakref.WeakKeyDictionary[Progress, tuple[int, int]] = weakref.WeakKeyDictionary()
_ORDER = itertools.count(1)
_LOCK = threading.RLock()  # re-entrant: a bar finalised by the collector inside it closes


def drawn_mark() -> int:
    """A mark in draw order: :func:`close_drawn` given it closes only the bars drawn after it."""
    return next(_ORDER)


def close_drawn(since: int) -> None:
    """Close the bars this thread drew after mark ``since`` and still holds open, newest first,
    for good (their later calls do nothing): the CLI calls it before its one line for a stop or
    an error. A generator the stop left suspended (evaluate's training images, while the
    coreset took a batch) would close its bar only when collected, after that line. Bars of
    other threads, or drawn before the command (a library caller's), are left alone."""
    me = threading.get_ident()
    with _LOCK:
        drawn = list(_DRAWN.items())
    mine = sorted(((order, bar) for bar, (thread, order) in drawn
                   if thread == me and order > since), key=lambda item: -item[0])
    for _, bar in mine:
        bar.close()
        bar._settings = None
