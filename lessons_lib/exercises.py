"""Friendly checks for the exercises at the end of each lesson.

A lesson module defines ``check_<name>(answer)`` functions built on :func:`check`; each prints a
verdict a learner can act on and returns a truthy/falsy :class:`Verdict` (so tests can assert on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class Verdict:
    """The result of a check: truthy when right. Shows nothing more in a notebook (the message is printed)."""

    def __init__(self, ok: bool):
        self.ok = bool(ok)

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"Verdict({self.ok})"

    def _ipython_display_(self) -> None:  # the printed message is the display
        pass


def verdict(ok: bool, praise: str, hint: str) -> Verdict:
    """Print "✅ praise" or "❌ hint" and return a truthy/falsy :class:`Verdict`."""
    print(("✅ Correct. " + praise) if ok else ("❌ Not yet. " + hint))
    return Verdict(ok)


def check(
    answer: Any,
    expected: Any,
    *,
    praise: str = "",
    hint: str = "",
    rel_tol: float | None = None,
    abs_tol: float | None = None,
    normalize: Callable[[Any], Any] | None = None,
) -> Verdict:
    """Compare a learner's ``answer`` with ``expected`` and print a friendly verdict.

    Numbers are compared with ``rel_tol``/``abs_tol`` when given; ``normalize`` is applied to both
    sides first (e.g. ``str.lower``). ``None`` (an unanswered exercise) gets a gentle reminder.
    """
    if answer is None or answer is Ellipsis:
        print("✏️  Not answered yet: replace the `...`/None with your answer and run the cell again.")
        return Verdict(False)
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
