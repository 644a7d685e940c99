"""Checks of arguments at the library's public boundary: each returns the value (coerced) or raises
:class:`BadArgument` (a ``ValueError``) whose message names the argument, the bad value and the fix.

One rule for numbers everywhere: Python and numpy integer and float scalars are numbers; ``bool`` is not (``True``
is a flag, never a count or a rate), nor is a string. A count must be a whole number (``8.0`` is accepted, ``8.7``
is refused rather than truncated). Floats must be finite unless said otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any


class BadArgument(ValueError):
    """An argument the library cannot use; the message says which, what it was and what to pass instead."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(name: str, value: Any, need: str, fix: str = "") -> BadArgument:
    return BadArgument(f"{name}={_show(value)}: {need}" + (f"; {fix}" if fix else ""))


def _number(value: Any, name: str, need: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, value, f"{need}, got {type(value).__name__}", fix)
    return value  # type: ignore[return-value]


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None, fix: str = "") -> int:
    """A whole number in [``low``, ``high``] (either bound optional) as a Python int."""
    bounds = f" in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
    need = "must be a whole number" + (bounds if low is not None or high is not None else "")
    v = _number(value, name, need, fix)
    if isinstance(v, float) or not isinstance(v, numbers.Integral):
        f = float(v)
        if not math.isfinite(f) or f != int(f):
            raise _fail(name, value, need + " (it is not rounded for you)", fix)
    i = int(v)
    if (low is not None and i < low) or (high is not None and i > high):
        raise _fail(name, value, need, fix)
    return i


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, finite: bool = True, fix: str = "") -> float:
    """A real number within the bounds (``low_open``/``high_open`` exclude them) as a Python float."""
    need = "must be a number"
    if low is not None or high is not None:
        lo = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
        need += f" in {lo}, {hi}"
    f = float(_number(value, name, need, fix))
    if math.isnan(f) or (finite and math.isinf(f)):
        raise _fail(name, value, need + " (finite)", fix)
    if low is not None and (f < low or (low_open and f == low)):
        raise _fail(name, value, need, fix)
    if high is not None and (f > high or (high_open and f == high)):
        raise _fail(name, value, need, fix)
    return f


def check_p(p: Any, name: str = "p") -> float:
    """The probability to DROP, in [0, 1), as a float."""
    return check_float(p, name, low=0.0, high=1.0, high_open=True,
                       fix="p is the probability to DROP a unit (0 keeps every unit, 0.5 drops half)")


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (strings)."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise _fail(name, value, f"must be one of {', '.join(map(repr, options))}")
    return value


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """A shape: a whole number >= 0 or a sequence of them, as a tuple of ints."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise _fail(name, shape, "must be a tuple of whole numbers, e.g. (128, 256)")
    return tuple(check_int(s, f"{name}[{i}]", low=0) for i, s in enumerate(shape))
