"""Exercises: the learner's code, checked at once against an independent reference.

Two kinds of exercise, one result type:

* **code**: the learner writes a function in the notebook; a lesson's ``checks.check_<name>(fn)`` runs it on
  cases whose right answer comes from something that is *not* a copy of the solution (PyTorch's own layer,
  numerical gradients, Keras semantics written as a spec, exact counts) and, when it is wrong, names the likely
  mistake. Build one with :func:`check_code`; inside its body raise :class:`Mistake` with the hint.
* **answer**: a value the learner computes or reads off their own run: :func:`check_answer`.

Every check prints exactly one verdict line and returns a :class:`CheckResult` (truthy when right)::

    ✓ Correct. <praise>                         right (the only verdict that contains "Correct")
    ✗ Not yet: <hint that names the mistake>    wrong
    ✗ Not yet: your function raised ...         it crashed (the line of the learner's cell is named)
    ✎ Not written yet: <what to do>             a stub that still raises NotImplementedError, or an answer of ``...``

The learner's edition runs top to bottom before anything is written: a later cell takes
``result.yours_or(reference)``, the learner's function once it passes, else the library's reference with a
one-line note.
"""

from __future__ import annotations

import inspect
import math
import numbers
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Status = Literal["correct", "wrong", "not_written"]
MARKS = {"correct": "✓", "wrong": "✗", "not_written": "✎"}  # glyphs that DejaVu Sans carries (no emoji font needed)


class Mistake(Exception):
    """Raised inside a check's body when the learner's code is wrong; the message is the hint shown."""


@dataclass
class CheckResult:
    """What a check found. ``status``: "correct", "wrong" or "not_written"; ``message``: the verdict line printed;
    ``candidate``: what was checked (the learner's function or answer)."""

    exercise: str
    status: Status
    message: str
    candidate: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "correct"

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"CheckResult({self.exercise!r}, {self.status!r})"

    def _ipython_display_(self) -> None:  # the printed verdict line is the display
        pass

    def yours_or(self, reference: Any) -> Any:
        """The learner's function if it passed, else ``reference``; prints one line saying which is used."""
        if self.ok:
            print(f"→ The cells below use your {self.exercise}.")
            return self.candidate
        where = f"{getattr(reference, '__module__', '')}.{getattr(reference, '__qualname__', '')}".strip(".")
        print(f"↪ The cells below use the library's reference {where} until your {self.exercise} passes its check.")
        return reference


def _say(exercise: str, status: Status, text: str, candidate: Any) -> CheckResult:
    head = {"correct": "Correct.", "wrong": "Not yet:", "not_written": "Not written yet:"}[status]
    message = f"{MARKS[status]} {head} {text}".rstrip()
    print(message)
    return CheckResult(exercise, status, message, candidate)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_unanswered(value: Any) -> bool:
    return value is None or value is Ellipsis


def _learner_line(exc: BaseException) -> str:
    """' (line N of your cell: `code`)' for the innermost frame that comes from a notebook cell, else ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename.startswith("<ipython-input") or "ipykernel_" in f.filename or f.filename.startswith("<")]
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f" (line {f.lineno} of your cell:{code})"


def check_code(exercise: str, candidate: Any, body: Callable[[Callable], None], *, praise: str,
               not_written: str = "", kind: Literal["function", "class"] = "function") -> CheckResult:
    """Run ``body(candidate)``; it raises :class:`Mistake` (with the hint) where the learner's code is wrong.

    ``exercise`` names the function as the learner wrote it (e.g. "dropout_forward"). A stub that raises
    ``NotImplementedError`` (or ``None`` / ``...`` instead of a function) is "not written" and its message says
    ``not_written`` (what to write first). Any other exception from the learner's code is "wrong" and names it.
    ``kind``: what the learner writes, a "function" or a "class" (the wording of the verdicts).
    """
    if _is_unanswered(candidate):
        text = f"define {exercise} in the cell above and run it. {not_written}"
        return _say(exercise, "not_written", text, candidate)
    if kind == "class" and not isinstance(candidate, type):
        what = (f"the function {getattr(candidate, '__name__', '?')}: write it as a class (class {exercise}(...):)"
                if callable(candidate) else f"{type(candidate).__name__} {candidate!r:.60}: pass the class itself, "
                "not an instance of it")
        return _say(exercise, "wrong", f"{exercise} should be a class; got {what}.", candidate)
    if not callable(candidate):
        return _say(exercise, "wrong", f"expected a function {exercise}(...), got {type(candidate).__name__} "
                                       f"{candidate!r:.60}. Pass the function itself, without calling it.", candidate)
    try:
        body(candidate)
    except NotImplementedError as e:
        stub = f" (your stub says: {e})" if str(e) else ""
        return _say(exercise, "not_written", f"{exercise} still raises NotImplementedError{stub}. {not_written}",
                    candidate)
    except Mistake as e:
        return _say(exercise, "wrong", str(e), candidate)
    except Exception as e:  # the learner's code crashed: name the error and their line
        return _say(exercise, "wrong", f"your {exercise} raised {type(e).__name__}: {e}{_learner_line(e)}", candidate)
    return _say(exercise, "correct", praise, candidate)


def check_answer(
    answer: Any,
    expected: Any,
    *,
    exercise: str = "answer",
    praise: str = "",
    hint: str = "",
    rel_tol: float | None = None,
    abs_tol: float | None = None,
    normalize: Callable[[Any], Any] | None = None,
    mistakes: dict[Any, str] | None = None,
) -> CheckResult:
    """Compare a learner's ``answer`` with ``expected`` (computed from the learner's own run where it can be).

    Numbers are compared with ``rel_tol``/``abs_tol`` when given; ``normalize`` is applied to both sides first
    (e.g. ``str.lower``). ``mistakes`` maps typical wrong answers to the hint that names that mistake (compared
    with the same tolerance). ``None`` / ``...`` (an unanswered exercise) is "not written".
    """
    for tol_name, tol in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
        if tol is not None and not tol >= 0:
            raise ValueError(f"{tol_name}={tol!r}: a tolerance must be >= 0 (a lesson's check is misconfigured)")
    if _is_unanswered(answer):
        return _say(exercise, "not_written", "replace the `...` with your answer and run the cell again.", answer)
    if hasattr(answer, "shape") and hasattr(answer, "item") and math.prod(answer.shape) == 1:
        answer = answer.item()  # a one-element array or tensor: its number
    if isinstance(expected, numbers.Number) and isinstance(answer, (list, tuple, dict, set)) or (
            hasattr(answer, "shape") and isinstance(expected, numbers.Number)):
        return _say(exercise, "wrong", f"expected one number, got {type(answer).__name__} {answer!r:.60}. "
                    f"{hint}".rstrip(), answer)
    if _is_bool(answer) and isinstance(expected, numbers.Number) and not _is_bool(expected):
        return _say(exercise, "wrong", f"expected a number, got {answer!r} (True and False are not numbers here). "
                    f"{hint}".rstrip(), answer)
    a, e = (normalize(answer), normalize(expected)) if normalize is not None else (answer, expected)

    def same(x: Any, y: Any) -> bool | None:
        if rel_tol is None and abs_tol is None:
            try:
                return bool(x == y)
            except (TypeError, ValueError, RuntimeError):  # e.g. an array answer: == gives no single truth value
                return False
        try:
            return math.isclose(float(x), float(y), rel_tol=rel_tol or 0.0, abs_tol=abs_tol or 0.0)
        except (TypeError, ValueError):
            return None

    ok = same(a, e)
    if ok is None:
        return _say(exercise, "wrong", f"expected a number, got {answer!r}. {hint}".rstrip(), answer)
    if ok:
        return _say(exercise, "correct", praise, answer)
    for wrong, why in (mistakes or {}).items():
        if same(a, normalize(wrong) if normalize is not None else wrong):
            return _say(exercise, "wrong", why, answer)
    return _say(exercise, "wrong", hint or f"{answer!r} is not it; re-read the cell above and try again.", answer)


# --- helpers for check bodies: each raises Mistake with the hint when the condition fails ---------------------
def expect_signature(fn: Any, call: str, *args: Any, **kwargs: Any) -> None:
    """Mistake (a "✗ Not yet", not a traceback) for a class, or a function whose signature cannot take the
    arguments the check will pass (``call`` shows the learner how the check calls it)."""
    if isinstance(fn, type):
        raise Mistake(f"expected a function {call}, got the class {fn.__name__}: write it with def")
    if not callable(fn):
        raise Mistake(f"expected a function {call}, got {type(fn).__name__} {fn!r:.40}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a readable signature: let the call tell
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise Mistake(f"the check calls {call}, but yours is {getattr(fn, '__name__', 'it')}{sig}: {e}") from None


def expect(condition: bool, hint: str) -> None:
    """Raise :class:`Mistake` with ``hint`` unless ``condition``."""
    if not condition:
        raise Mistake(hint)


def expect_shape(value: Any, shape: tuple[int, ...], what: str) -> None:
    """``value`` must have ``.shape == shape``."""
    got = getattr(value, "shape", None)
    if got is None:
        raise Mistake(f"{what} should be an array of shape {shape}, got {type(value).__name__}")
    if tuple(got) != tuple(shape):
        raise Mistake(f"{what} has shape {tuple(got)}, expected {tuple(shape)}")


def diagnose(value: Any, candidates: dict[str, Callable[[Any], bool]]) -> None:
    """Raise :class:`Mistake` with the first hint whose predicate matches ``value`` (typical wrong answers,
    tried in order); do nothing when none matches."""
    for hint, predicate in candidates.items():
        try:
            hit = bool(predicate(value))
        except Exception:  # a predicate that cannot even be evaluated on this value does not match it
            hit = False
        if hit:
            raise Mistake(hint)


# Transitional name: lessons not yet moved to check_answer keep working.
check = check_answer
