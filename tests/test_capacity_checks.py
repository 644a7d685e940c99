"""Lesson 01's checks: the reference passes, a stub is "not written", a crash is named, and typical planted bugs
are each caught with the hint that names them; the questions take their answers from the run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lessons_lib.capacity import checks, lab, reference
from lessons_lib.history import History


# --- fit_polynomial --------------------------------------------------------------------------------
def planted_fit(bug: str | None = None):
    """A learner's fit_polynomial with one typical bug planted."""

    def fit_polynomial(x_train, y_train, x_val, y_val, degree):
        cols = {"degree_minus": degree, "degree_plus": degree + 2}.get(bug, degree + 1)
        increasing = bug != "order"
        fit_x, fit_y = (x_val, y_val) if bug == "fit_on_val" else (x_train, y_train)
        coef = np.linalg.lstsq(np.vander(fit_x, cols, increasing=increasing), fit_y, rcond=None)[0]
        r_train = np.vander(x_train, cols, increasing=increasing) @ coef - y_train
        r_val = r_train if bug == "val_on_train" else np.vander(x_val, cols, increasing=increasing) @ coef - y_val
        score = {"sse": np.sum, "rmse": lambda e: np.sqrt(np.mean(e))}.get(bug, np.mean)
        tr, va = score(r_train**2), score(r_val**2)
        return (coef, va, tr) if bug == "swapped" else (coef, tr, va)

    return fit_polynomial


def test_reference_and_a_right_learner_pass():
    assert checks.check_fit_polynomial(reference.fit_polynomial).status == "correct"
    assert checks.check_fit_polynomial(planted_fit()).status == "correct"


def test_the_reference_is_numpys_least_squares():
    p = lab.polynomial_sweep(seed=4)
    for d, coef in zip(p.degrees, p.coefs):
        legendre = np.polynomial.legendre.legfit(p.x_train, p.y_train, d)  # another basis, the same polynomial
        xs = np.linspace(-1, 1, 50)
        assert np.allclose(reference.predict(coef, xs), np.polynomial.legendre.legval(xs, legendre), atol=1e-6)


def test_fit_stub_and_crash():
    def stub(*args):
        raise NotImplementedError("build the columns")

    r = checks.check_fit_polynomial(stub)
    assert r.status == "not_written" and "build the columns" in r.message
    assert r.yours_or(reference.fit_polynomial) is reference.fit_polynomial
    crash = checks.check_fit_polynomial(lambda *a: np.linalg.solve(np.ones((2, 3)), a[1]))
    assert crash.status == "wrong" and "LinAlgError" in crash.message


@pytest.mark.parametrize("bug, words", [
    ("order", "coefficients in the wrong order"),
    ("degree_minus", "degree off by one"),
    ("degree_plus", "(one more)"),
    ("fit_on_val", "fitted on the validation points"),
    ("val_on_train", "val_mse is measured on the training points"),
    ("sse", "sum of squared errors"),
    ("rmse", "root of the mean squared error"),
    ("swapped", "swapped"),
])
def test_planted_fit_bugs_are_named(bug, words):
    r = checks.check_fit_polynomial(planted_fit(bug))
    assert r.status == "wrong" and words in r.message


def test_a_fit_that_is_not_least_squares_gets_the_generic_hint():
    def interpolate_first_points(x, y, xv, yv, d):  # solves through the first d + 1 points only
        coef = np.linalg.solve(np.vander(x[: d + 1], d + 1, increasing=True), y[: d + 1])
        return coef, reference.mse(reference.predict(coef, x), y), reference.mse(reference.predict(coef, xv), yv)

    r = checks.check_fit_polynomial(interpolate_first_points)
    assert r.status == "wrong" and "not the least-squares fit" in r.message and "np.linalg.lstsq" in r.message
    zero = checks.check_fit_polynomial(lambda x, y, xv, yv, d: (reference.fit_polynomial(x, y, xv, yv, d)[0], 0.0, 0.0))
    assert zero.status == "wrong" and "your val_mse is 0" in zero.message  # no known mistake: the generic hint


# --- random_labels ---------------------------------------------------------------------------------
def shuffle_in_place(y, rng):
    rng.shuffle(y)
    return y


PLANTED_RELABEL = {
    "uniform": (lambda y, rng: rng.integers(0, 10, len(y)), "drew new labels"),
    "unchanged": (lambda y, rng: y.copy(), "returned the labels unchanged"),
    "in place": (shuffle_in_place, "shuffled the caller's array in place"),
    "returns None": (lambda y, rng: rng.shuffle(y), "returned None"),
    "global rng": (lambda y, rng: np.random.permutation(y), "does not come from rng"),
    "ignores rng": (lambda y, rng: np.roll(y, 7), "does not depend on rng"),
    "partial shuffle": (lambda y, rng: np.concatenate([rng.permutation(y[: len(y) // 3]), y[len(y) // 3:]]),
                        "still depend on the old ones"),
    "positions": (lambda y, rng: rng.permutation(len(y)), "permutation of the positions"),
    "floats": (lambda y, rng: rng.permutation(y).astype(float), "integer class indices"),
}


def test_relabel_reference_and_right_learners_pass():
    assert checks.check_random_labels(reference.random_labels).status == "correct"
    assert checks.check_random_labels(lambda y, rng: y[rng.permutation(len(y))]).status == "correct"
    assert checks.check_random_labels(lambda y, rng: rng.choice(y, size=len(y), replace=False)).status == "correct"


def test_relabel_stub_and_crash():
    def stub(y, rng):
        raise NotImplementedError("shuffle a copy")

    assert checks.check_random_labels(stub).status == "not_written"
    crash = checks.check_random_labels(lambda y, rng: y.permute())
    assert crash.status == "wrong" and "AttributeError" in crash.message


@pytest.mark.parametrize("name", PLANTED_RELABEL)
def test_planted_relabel_bugs_are_named(name):
    fn, words = PLANTED_RELABEL[name]
    r = checks.check_random_labels(fn)
    assert r.status == "wrong" and words in r.message, r.message


def test_checks_are_fast():
    t0 = time.perf_counter()
    checks.check_fit_polynomial(reference.fit_polynomial)
    checks.check_random_labels(reference.random_labels)
    assert time.perf_counter() - t0 < 2.0


# --- the questions ---------------------------------------------------------------------------------
def _history(val_acc: float) -> History:
    h = History()
    h.append({"epoch": 0, "train_loss": 0.0, "train_acc": 1.0, "val_loss": 2.3, "val_acc": val_acc, "seconds": 1.0,
              "samples_per_s": 1.0, "step_seconds": 0.1})
    return h


def test_check_chance_level():
    rand = lab.Memorization([_history(0.98)] * 2, [_history(0.11), _history(0.13)], [1, 2])
    assert checks.check_chance_level(0.1, rand) and checks.check_chance_level(1 / 10, rand)
    assert "this run: 0.120, the mean of 2 seeds" in checks.check_chance_level(0.1, rand).message
    assert "TRAINING accuracy" in checks.check_chance_level(1.0, rand).message
    assert "percentage" in checks.check_chance_level(10, rand).message
    assert checks.check_chance_level(..., rand).status == "not_written"
    assert checks.check_chance_level(0.25, lab.Memorization([_history(0.9)], [_history(0.3)], [1], n_classes=4))


def _row(width: int, accs: list[tuple[float, float]]) -> lab.SweepRow:
    """A sweep row whose seeds end at the given (train acc, val acc)."""
    hs = []
    for tr, va in accs:
        h = _history(va)
        h.train_acc[-1] = tr
        hs.append(h)
    return lab.SweepRow(width, 0, hs)


def test_check_largest_gap_reads_the_sweep():
    sweep = [_row(2, [(0.3, 0.28), (0.3, 0.28)]), _row(64, [(0.8, 0.7), (0.8, 0.7)]),
             _row(512, [(1.0, 0.6), (1.0, 0.6)])]
    assert checks.check_largest_gap(512, sweep)
    assert "highest VALIDATION accuracy" in checks.check_largest_gap(64, sweep).message
    assert "SMALLEST gap" in checks.check_largest_gap(2, sweep).message
    # the gap is the mean over the seeds: one seed's big gap at 512 does not beat 64's steady one
    flipped = [_row(2, [(0.3, 0.28)] * 2), _row(64, [(0.9, 0.5), (0.9, 0.5)]), _row(512, [(1.0, 0.3), (1.0, 0.9)])]
    assert checks.check_largest_gap(64, flipped) and not checks.check_largest_gap(512, flipped)


def test_check_best_degree_reads_the_sweep():
    p = lab.polynomial_sweep()
    assert checks.check_best_degree(p.best_degree, p)
    assert "lowest TRAINING error" in checks.check_best_degree(int(p.degrees[-1]), p).message
