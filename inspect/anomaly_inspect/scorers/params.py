"""Construction-time checks of scorer parameters: one ``ValueError`` naming the owner, the
parameter, the value and what is allowed (``"knn: k must be a whole number >= 1, got 2.5"``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def check_number(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 *, low_open: bool = False, high_open: bool = False, whole: bool = False,
                 finite: bool = False, allowed: tuple = ()) -> None:
    """Raise unless ``value`` is a real number (``whole``: an integer, numpy ones included;
    never a bool) between ``low`` and ``high`` (excluded where open), or one of ``allowed``
    (e.g. ``None``, ``"auto"``), which pass as they are. NaN is never in range. Infinity is
    where the bounds hold it (feature_norm's ``p``: the max norm), but not with ``finite``: a
    learning rate or temperature of inf passes the bounds yet makes every score NaN or equal."""
    if any(value is a if a is None else (type(value) is type(a) and value == a) for a in allowed):
        return
    kind = numbers.Integral if whole else numbers.Real
    ok = (isinstance(value, kind) and not isinstance(value, bool)
          and (low < value if low_open else low <= value)
          and (value < high if high_open else value <= high)
          and (not finite or isinstance(value, numbers.Integral) or math.isfinite(value)))
    if ok:
        return
    if low > -math.inf and high < math.inf:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low > -math.inf:
        span = f"{'>' if low_open else '>='} {low:g}"
    else:
        span = f"{'<' if high_open else '<='} {high:g}"
    # "finite" where that is what the value lacks: the range alone reads wrong for inf
    infinite = (finite and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
                and not math.isfinite(value))
    what = f"a {'whole ' if whole else 'finite ' if infinite else ''}number {span}"
    if allowed:
        options = [what, *(repr(a) for a in allowed)]
        what = ", ".join(options[:-1]) + " or " + options[-1]
    raise ValueError(f"{owner}: {name} must be {what}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")


def check_flag(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    """Raise unless ``value`` is True or False (numpy's too), or None where ``allow_none``: a
    string such as "false" from a config would otherwise count as true."""
    if (value is None and allow_none) or isinstance(value, bool | np.bool_):
        return
    raise ValueError(f"{owner}: {name} must be true or false{' or None' if allow_none else ''}, "
                     f"got {value!r}")
