"""Friendly checks for the exercises at the end of each lesson.

A lesson module defines ``check_<name>(answer)`` functions built on :func:`check`; each prints a
verdict a learner can act on and returns True/False (so tests can assert on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def verdict(ok: bool, praise: str, hint: str) -> bool:
    """Print "✅ praise" or "❌ hint" and return ``ok``."""
    print(("✅ Correct. " + praise) if ok else ("❌ Not yet. " + hint))
    return bool(ok)


def check(
    answer: Any,
    expected: Any,
    *,
    praise: str = "",
    hint: str = "",
    rel_tol: float | None = None,
    abs_tol: float | None = None,
    normalize: Callable[[Any], Any] | None = None,
) -> bool:
    """Compare a learner's ``answer`` with ``expected`` and print a friendly verdict.

    Numbers are compared with ``rel_tol``/``abs_tol`` when given; ``normalize`` is applied to both
    sides first (e.g. ``str.lower``). ``None`` (an unanswered exercise) gets a gentle reminder.
    """
    if answer is None or answer is Ellipsis:
        print("✏️  Not answered yet: replace the `...`/None with your answer and run the cell again.")
        return False
    if normalize is not None:
        answer, expected = normalize(answer), normalize(expected)
    if rel_tol is not None or abs_tol is not None:
        try:
            ok = math.isclose(float(answer), float(expected), rel_tol=rel_tol or 0.0, abs_tol=abs_tol or 0.0)
        except (TypeError, ValueError):
            return verdict(False, praise, f"expected a number, got {answer!r}. {hint}")
    else:
        ok = answer == expected
    return verdict(ok, praise, hint or f"{answer!r} is not it; re-read the cell above and try again.")
