"""Checks of arguments at the library's public boundary: each returns the value (coerced) or raises a
``ValueError`` that names the argument, the bad value and the fix.

Numbers: numpy integer and float scalars are numbers; ``bool`` is not.
"""

from __future__ import annotations


def check_p(p: float, name: str = "p") -> float:
    """Return ``float(p)``; raise ValueError unless 0 <= p < 1 (p = probability to DROP)."""
    if isinstance(p, bool):
        raise ValueError(f"{name} is the probability to DROP and must be a number in [0, 1), got {p!r}")
    try:
        pf = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is the probability to DROP and must be a number in [0, 1), got {p!r}") from None
    if not 0.0 <= pf < 1.0:  # also rejects NaN
        raise ValueError(f"{name} is the probability to DROP and must be in [0, 1) (0 = keep all), got {p!r}")
    return pf
