"""Lesson 01 · checks: the learner's polynomial fit and random labels, and the questions on this run.

* ``fit_polynomial`` against numpy's own least-squares fit (``np.polynomial.Polynomial.fit``, which works in a
  scaled basis: a different computation of the same polynomial), an exact quadratic with known errors, and the
  mean squared error computed here. Typical mistakes are recomputed and named: columns in the wrong order,
  degree off by one, the sum instead of the mean, the root of it, validation measured on the training points.
* ``random_labels`` against what a permutation must be: exactly the same class counts, the input untouched, drawn
  from the ``rng`` it is given, and new labels independent of the old ones (a chi-square test of the contingency
  table, with a false alarm rate below 1e-9).

Every check is deterministic (fixed seeds inside) and returns an :class:`~lessons_lib.exercises.CheckResult`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.polynomial import Polynomial
from numpy.polynomial import polynomial as P
from scipy.stats import chi2_contingency

from ..exercises import CheckResult, Mistake, check_answer, check_code, diagnose, expect, expect_signature

if TYPE_CHECKING:
    from .lab import Memorization, PolySweep, SweepRow

ALPHA = 1e-9  # a right answer fails a statistical test with probability below this


# --- fit_polynomial ---------------------------------------------------------------------------------
def _quadratic(t: np.ndarray) -> np.ndarray:
    return 1 + 2 * t - 3 * t**2


def _fit_cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
    """(name, x_train, y_train, x_val, y_val, degree): an exact quadratic, then noisy sines of several degrees."""
    x, xv = np.linspace(-1, 1, 9), np.linspace(-0.95, 0.95, 5)
    cases = [("the quadratic 1 + 2x − 3x² (validation points shifted up by 0.5)", x, _quadratic(x), xv,
              _quadratic(xv) + 0.5, 2)]
    rng = np.random.default_rng(5)
    for d, n, nv in ((0, 12, 30), (1, 12, 30), (3, 15, 40), (6, 20, 35)):
        xt, xv = rng.uniform(-1, 1, n), rng.uniform(-1, 1, nv)
        yt = np.sin(np.pi * xt) + 0.3 * rng.standard_normal(n)
        yv = np.sin(np.pi * xv) + 0.3 * rng.standard_normal(nv)
        cases.append((f"{n} noisy points of sin(πx), degree {d}", xt, yt, xv, yv, d))
    return cases


def _close(a, b, rel: float = 1e-5) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rel, atol=rel * (1 + np.abs(b).max(initial=0))))


GRID = np.linspace(-1, 1, 41)


class _NoKnownMistake(Mistake):
    """Wrong, but no typical mistake matches on this case: another case may still name it."""


def _check_coef(name: str, coef: np.ndarray, x, y, xv, yv, d: int) -> None:
    """``coef`` must be the least-squares polynomial of degree ``d`` through (x, y), lowest power first."""
    expect(coef.ndim == 1, f"coef should be a 1-D array of degree + 1 numbers; got shape {coef.shape}.")
    if len(coef) != d + 1:
        more = "one fewer" if len(coef) == d else "one more" if len(coef) == d + 2 else "not d + 1"
        raise Mistake(f"degree off by one: a polynomial of degree d has d + 1 coefficients (x**0 … x**d), so degree "
                      f"{d} needs {d + 1}; yours has {len(coef)} ({more}). Use d + 1 columns.")
    ref = Polynomial.fit(x, y, d)  # numpy's least squares, in a scaled basis
    if _close(P.polyval(GRID, coef), ref(GRID)):
        return
    diagnose(coef, {
        "coefficients in the wrong order: coef[k] must multiply x**k (lowest power first). np.vander and np.polyfit "
        "put the highest power first; use np.vander(x, d + 1, increasing=True) or x[:, None] ** np.arange(d + 1).":
            lambda c: d > 0 and _close(P.polyval(GRID, c[::-1]), ref(GRID)),
        "fitted on the validation points: fit on (x_train, y_train) only; the validation points must stay unseen, to "
        "measure how the fit does on new data.": lambda c: _close(P.polyval(GRID, c), Polynomial.fit(xv, yv, d)(GRID)),
    })
    raise _NoKnownMistake(f"on {name}, your coefficients are not the least-squares fit: at x = 0.5 your polynomial "
                          f"gives {P.polyval(0.5, coef):.4g}, least squares {ref(0.5):.4g}. Build the columns x**0 … "
                          "x**d and solve min ‖X·coef − y‖² (np.linalg.lstsq(X, y, rcond=None)).")


def _check_error(name: str, what: str, got, want: float, n: int, other: float) -> None:
    """``got`` must be the mean squared error ``want`` over ``n`` points (``other``: the other set's error)."""
    expect(np.ndim(got) == 0, f"{what} should be one number; got an array of shape {np.shape(got)}.")
    got = float(got)
    if _close(got, want):
        return
    diagnose(got, {
        f"{what} is the sum of squared errors: the MEAN squared error divides it by the number of points ({n} here).":
            lambda g: _close(g, n * want),
        f"{what} is the root of the mean squared error (RMSE): leave out the square root.":
            lambda g: _close(g, np.sqrt(want)),
        "val_mse is measured on the training points: evaluate the polynomial on (x_val, y_val), the points it has not "
        "seen.": lambda g: what == "val_mse" and other > 1e-9 and _close(g, other),
        "train_mse and val_mse are swapped: return coef, train_mse, val_mse in that order.":
            lambda g: other > 1e-9 and _close(g, other),
    })
    raise _NoKnownMistake(f"on {name}, your {what} is {got:.6g}; the mean squared error of the fit there is "
                          f"{want:.6g}: the average over the points of (prediction − y)².")


def check_fit_polynomial(fit) -> CheckResult:
    """The learner's ``fit_polynomial(x_train, y_train, x_val, y_val, degree) -> (coef, train_mse, val_mse)``."""

    def body(fit) -> None:
        expect_signature(fit, "fit_polynomial(x_train, y_train, x_val, y_val, degree)", 0, 0, 0, 0, 0)
        unnamed: list[Mistake] = []  # wrong where no typical mistake matched: said only if no case names one
        for name, x, y, xv, yv, d in _fit_cases():
            res = fit(x.copy(), y.copy(), xv.copy(), yv.copy(), d)
            expect(isinstance(res, tuple) and len(res) == 3, "fit_polynomial must return three things: "
                   "`return coef, train_mse, val_mse`; got "
                   + (f"a tuple of {len(res)}." if isinstance(res, tuple) else f"{type(res).__name__}."))
            ref = Polynomial.fit(x, y, d)
            want_tr, want_va = np.mean((ref(x) - y) ** 2), np.mean((ref(xv) - yv) ** 2)
            try:
                coef = np.asarray(res[0], dtype=float)
            except (TypeError, ValueError):
                raise Mistake(f"coef should be an array of numbers; got {res[0]!r:.60}.") from None
            for what, v in (("train_mse", res[1]), ("val_mse", res[2])):
                expect(isinstance(v, (int, float, np.number, np.ndarray)) and not isinstance(v, bool),
                       f"{what} should be a number; got {type(v).__name__} {v!r:.40}.")
            try:
                _check_coef(name, coef, x, y, xv, yv, d)
                _check_error(name, "train_mse", res[1], want_tr, len(x), want_va)
                _check_error(name, "val_mse", res[2], want_va, len(xv), want_tr)
            except _NoKnownMistake as e:
                unnamed.append(e)
        if unnamed:
            raise unnamed[0]

    return check_code("fit_polynomial", fit, body, not_written="Fill in the body of fit_polynomial.",
                      praise="Your least-squares fit matches numpy's Polynomial.fit, and both errors are right.")


# --- random_labels -----------------------------------------------------------------------------------
COUNTS = (150, 300, 180, 220, 260, 170, 190, 240, 200, 90)  # unequal on purpose: counts reveal new draws


def _class_sorted() -> np.ndarray:
    return np.repeat(np.arange(len(COUNTS)), COUNTS)


def check_random_labels(relabel) -> CheckResult:
    """The learner's ``random_labels(y, rng) -> new labels``: a permutation of ``y`` drawn from ``rng``."""
    k = len(COUNTS)

    def call(y: np.ndarray, seed: int) -> np.ndarray:
        before = y.copy()
        out = relabel(y, np.random.default_rng(seed))
        expect(out is not None, "random_labels returned None: rng.shuffle(y) shuffles in place and returns None. "
                                "Return a shuffled copy: rng.permutation(y).")
        expect(np.array_equal(y, before), "random_labels shuffled the caller's array in place: the true labels are "
                                          "gone too (lesson 01 trains on both). Leave y alone and return a shuffled "
                                          "copy: rng.permutation(y).")
        try:
            out = np.asarray(out)
        except (TypeError, ValueError):
            raise Mistake(f"random_labels must return an array of labels; got {type(out).__name__}.") from None
        expect(out.shape == y.shape, f"random_labels must return one label per example, shape {y.shape}; "
                                     f"got shape {out.shape}.")
        expect(np.issubdtype(out.dtype, np.integer), f"labels are integer class indices; yours have dtype "
                                                     f"{out.dtype}.")
        return out

    def body(relabel) -> None:
        expect_signature(relabel, "random_labels(y, rng)", 0, 0)
        y = _class_sorted()
        out = call(y, 1)
        want, got = np.bincount(y, minlength=k), np.bincount(out.clip(0), minlength=k)
        if len(got) != k or not np.array_equal(got, want) or out.min() < 0:
            diagnose(out, {
                "returned a permutation of the positions (like rng.permutation(len(y))), not of the labels: permute "
                "y itself, rng.permutation(y).": lambda o: np.array_equal(np.sort(o), np.arange(len(y))),
                f"drew new labels (uniformly, e.g. rng.integers(0, {k}, n)): the class counts change (class 0 had "
                f"{want[0]} labels, yours has {got[0]}). A permutation of y keeps every class's count, so only the "
                "link between input and label is broken.": lambda o: o.min() >= 0 and o.max() < k,
            })
            raise Mistake("the new labels are not a rearrangement of y: the class counts differ. Shuffle y itself.")
        expect(not np.array_equal(out, y), "returned the labels unchanged: every input still has its true label. "
                                           "Shuffle them: rng.permutation(y).")
        expect(np.array_equal(call(y, 1), out), "two calls with the same seeded rng gave different labels: the "
                                                "result does not come from rng (np.random.permutation draws from "
                                                "numpy's global generator). Use the rng you are given, so "
                                                "LESSONS_SEED reproduces the run.")
        mixed = np.random.default_rng(3).permutation(y)
        expect(not np.array_equal(call(mixed, 2), call(mixed, 7)),
               "the result does not depend on rng: every seed gives the same labels (sorted, rolled, or a fixed "
               "reordering?). Draw the permutation from rng: rng.permutation(y).")
        for y_in, seed in ((y, 11), (mixed, 12)):
            out = call(y_in, seed)
            table = np.zeros((k, k))
            np.add.at(table, (y_in, out), 1)
            p = chi2_contingency(table)[1]
            if p < ALPHA:
                same = float(np.mean(out == y_in))
                chance = float(np.sum((np.asarray(COUNTS) / len(y)) ** 2))
                raise Mistake(f"the new labels still depend on the old ones ({same:.0%} kept their label; a random "
                              f"permutation keeps about {chance:.0%}; chi-square test p = {p:.1e}). Shuffle the whole "
                              "array at random, not a part of it or by a fixed shift.")

    return check_code("random_labels", relabel, body, not_written="Fill in the body of random_labels.",
                      praise="Same class counts, the input untouched, reproducible from rng, and the new labels "
                             "independent of the old ones (chi-square test).")


# --- the questions, answered from this run ----------------------------------------------------------
def check_chance_level(answer: float, rand: Memorization) -> CheckResult:
    """The validation accuracy expected from a network trained on random labels, as a fraction."""
    chance = 1 / rand.n_classes
    measured = float(np.mean([h.val_acc[-1] for h in rand.random]))
    return check_answer(answer, chance, exercise="chance", rel_tol=0.05,
                        praise=f"Nothing links an input to its random label, so any classifier scores about 1 in "
                               f"{rand.n_classes} on new data (this run: {measured:.3f}, the mean of "
                               f"{len(rand.random)} seeds).",
                        mistakes={1.0: "1.0 is the TRAINING accuracy it reaches by memorizing; the question asks about "
                                       "the validation set, new inputs.",
                                  100 / rand.n_classes: "as a fraction, not a percentage.",
                                  0.0: "it does not get everything wrong: guessing one of the classes is right "
                                       "by chance."},
                        hint=f"think of guessing one of {rand.n_classes} classes with no information at all.")


def check_largest_gap(answer: int, sweep: list[SweepRow]) -> CheckResult:
    """The width with the largest train − validation accuracy gap in this run's width sweep (the rows' accuracies
    and gaps are means over the seeds)."""
    best = max(sweep, key=lambda r: r.gap)
    mistakes: dict[int, str] = {}
    for row, why in ((max(sweep, key=lambda r: r.val_acc), "the highest VALIDATION accuracy"),
                     (max(sweep, key=lambda r: r.train_acc), "the highest training accuracy"),
                     (min(sweep, key=lambda r: r.gap), "the SMALLEST gap")):
        if row.width != best.width:
            mistakes.setdefault(row.width, f"width {row.width} has {why}, not the largest gap: compute "
                                           "train_acc − val_acc for each row of the sweep.")
    return check_answer(answer, best.width, exercise="largest_gap", mistakes=mistakes,
                        praise=f"Width {best.width} overfits most in this run (mean gap {best.gap:.3f}).",
                        hint="compute train_acc − val_acc for each row of the sweep table; take the largest.")


def check_best_degree(answer: int, poly: PolySweep) -> CheckResult:
    """The polynomial degree with the lowest validation error in this run."""
    train_best = int(poly.degrees[int(np.argmin(poly.train_mse))])
    mistakes = {train_best: "that degree has the lowest TRAINING error, which only falls as the degree grows; "
                            "capacity is chosen on the validation error."} if train_best != poly.best_degree else {}
    return check_answer(answer, poly.best_degree, exercise="best_degree", mistakes=mistakes,
                        praise=f"Degree {poly.best_degree} balances underfitting and overfitting here.",
                        hint="look for the minimum of the validation curve, not the training curve.")
