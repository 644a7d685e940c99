"""Lesson 01, bad input at the public boundary (issue 17): the reference's fit and random labels, the lab's sweeps
and experiments, and the checks fed nonsense (a verdict, never a traceback); Hypothesis for the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import Polynomial

from lessons_lib.capacity import checks, lab, reference
from lessons_lib.validate import BadArgument

X, Y = np.linspace(-1, 1, 8), np.sin(np.linspace(-1, 1, 8))


# --- reference.fit_polynomial ---------------------------------------------------------------------------
@pytest.mark.parametrize("degree, match", [(True, "got bool"), (2.5, "not rounded"), (-1, "degree=-1"),
                                           (float("nan"), "degree"), ("3", "got str"), (None, "NoneType"),
                                           (float("inf"), "degree")])
def test_fit_polynomial_refuses_bad_degrees(degree, match):
    with pytest.raises(BadArgument, match=match):
        reference.fit_polynomial(X, Y, X, Y, degree)


@pytest.mark.parametrize("args, match", [
    ((X, Y[:-1], X, Y), "same length"), ((np.ones((8, 2)), Y, X, Y), "1-D"), ((X[:0], Y[:0], X, Y), ">= 1"),
    ((np.r_[X[:-1], np.nan], Y, X, Y), "NaN or inf"), (("abc", Y, X, Y), "arrays of numbers"),
    ((X, Y, X, np.r_[Y[:-1], np.inf]), "validation points contain NaN"),
])
def test_fit_polynomial_refuses_bad_points(args, match):
    with pytest.raises(BadArgument, match=match):
        reference.fit_polynomial(*args, 2)


def test_fit_polynomial_takes_numpy_integer_degrees_and_lists():
    a = reference.fit_polynomial(list(X), list(Y), X, Y, np.int64(3))
    b = reference.fit_polynomial(X, Y, X, Y, 3)
    assert np.allclose(a[0], b[0]) and a[1:] == b[1:]


@given(st.integers(0, 5), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_fit_polynomial_is_numpys_least_squares(degree, seed):
    rng = np.random.default_rng(seed)
    n = degree + 1 + int(rng.integers(0, 10))
    x, xv = np.sort(rng.uniform(-1, 1, n)), rng.uniform(-1, 1, 7)
    if n > 1 and np.min(np.diff(x)) < 1e-3:  # nearly repeated points: an ill-posed fit, not what this property is about
        return
    y, yv = rng.normal(size=n), rng.normal(size=7)
    coef, tr, va = reference.fit_polynomial(x, y, xv, yv, degree)
    ref = Polynomial.fit(x, y, degree)
    grid = np.linspace(-1, 1, 9)
    assert coef.shape == (degree + 1,)
    assert np.allclose(reference.predict(coef, grid), ref(grid), atol=1e-6 * (1 + np.abs(ref(grid)).max()))
    assert tr == pytest.approx(np.mean((ref(x) - y) ** 2), abs=1e-9) and tr <= np.mean((y - y.mean()) ** 2) + 1e-12
    assert va == pytest.approx(np.mean((ref(xv) - yv) ** 2), rel=1e-5, abs=1e-9)


# --- reference.random_labels ----------------------------------------------------------------------------
@given(st.lists(st.integers(0, 9), max_size=200), st.integers(0, 2**32 - 1),
       st.sampled_from([np.int8, np.int32, np.int64, np.uint8]))
@settings(max_examples=60, deadline=None)
def test_random_labels_is_a_permutation_from_rng(labels, seed, dtype):
    y = np.array(labels, dtype=dtype)
    before = y.copy()
    out = reference.random_labels(y, np.random.default_rng(seed))
    assert np.array_equal(y, before) and out.shape == y.shape and out.dtype == y.dtype
    assert np.array_equal(np.sort(out), np.sort(y))
    assert np.array_equal(out, reference.random_labels(y, np.random.default_rng(seed)))


def test_random_labels_takes_a_tensor_and_refuses_nonsense():
    assert sorted(reference.random_labels(torch.arange(5), np.random.default_rng(0))) == [0, 1, 2, 3, 4]
    for rng in (None, 3, np.random.RandomState(0)):
        with pytest.raises(BadArgument, match="numpy Generator"):
            reference.random_labels(np.arange(5), rng)
    for y in (np.ones((3, 2), int), np.array([0.5, 1.5]), np.array(["a", "b"])):
        with pytest.raises(BadArgument, match="1-D array of integer class labels"):
            reference.random_labels(y, np.random.default_rng(0))


# --- the lab ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(n_train=True), "n_train=True"), (dict(n_train=1), "n_train=1"), (dict(n_train=2.5), "not rounded"),
    (dict(n_val=0), "n_val=0"), (dict(n_val=None), "n_val"), (dict(noise=float("nan")), "noise"),
    (dict(noise=-0.1), "noise=-0.1"), (dict(noise="0.1"), "noise"), (dict(degrees=[]), "non-empty"),
    (dict(degrees=[True]), "degrees\\[0\\]"), (dict(degrees=[2.5]), "not rounded"), (dict(degrees=[-1]), "degrees"),
    (dict(degrees="012"), "degrees"), (dict(fit=None), "fit=None"), (dict(fit=type("X", (), {})), "fit="),
    (dict(fit=lambda x: 0), "yours takes \\(x\\)"), (dict(fit=lambda *a: None), "fit returned None"),
    (dict(fit=lambda *a: (np.zeros(2), 0.0)), "fit returned"), (dict(fit=lambda x, y, xv, yv, d: (np.zeros(d), 0, 0)),
                                                             "degree \\+ 1"),
])
def test_polynomial_sweep_refuses_bad_arguments(kw, match):
    with pytest.raises(BadArgument, match=match):
        lab.polynomial_sweep(**kw)


def test_polynomial_sweeps_needs_two_draws():
    with pytest.raises(BadArgument, match="n=1"):
        lab.polynomial_sweeps(1)


@pytest.mark.parametrize("kw, match", [
    (dict(labels="shuffled"), "labels"), (dict(depth=2.5), "depth"), (dict(depth=True), "depth"),
    (dict(width=None), "width"), (dict(dataset="cifar"), "cifar"), (dict(labels="random", relabel=None), "relabel"),
    (dict(labels="random", relabel=lambda y: y), "yours takes \\(y\\)"),
    (dict(labels="random", relabel=lambda y, rng: None), "relabel returned None"),
    (dict(labels="random", relabel=lambda y, rng: y[:-1]), "shape"),
    (dict(labels="random", relabel=lambda y, rng: y.astype(float)), "dtype float64"),
    (dict(labels="random", relabel=lambda y, rng: y + 10), "integer class in \\[0, 10\\)"),
])
def test_experiment_refuses_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        lab.experiment(**({"width": 4, "epochs": 1} | kw))


def test_sweeps_refuse_bad_sizes():
    for kw, match in ((dict(widths=[]), "non-empty"), (dict(widths=[0]), "widths\\[0\\]"),
                      (dict(widths=[4], n_seeds=1), "n_seeds"), (dict(widths=[4], dataset="cifar"), "dataset")):
        with pytest.raises(BadArgument, match=match):
            lab.width_sweep(**({"epochs": 1} | kw))
    with pytest.raises(BadArgument, match="n_seeds"):
        lab.random_labels_experiment(n_seeds=True)
    with pytest.raises(BadArgument, match="relabel"):
        lab.random_labels_experiment(relabel="shuffle")
    with pytest.raises(BadArgument, match="relabel"):
        lab.make_panel(relabel=42)


# --- the checks fed nonsense: a "Not yet" verdict, never a traceback --------------------------------------
def not_yet(result, *words):
    assert result.status == "wrong" and result.message.startswith("✗ Not yet:"), result.message
    for w in words:
        assert w in result.message, result.message


def test_check_fit_polynomial_on_nonsense():
    not_yet(checks.check_fit_polynomial(type("Fit", (), {})), "expected a function", "got the class Fit")
    not_yet(checks.check_fit_polynomial(lambda x, y: 0), "the check calls fit_polynomial(x_train, y_train, x_val")
    not_yet(checks.check_fit_polynomial(lambda *a: None), "return three things", "NoneType")
    not_yet(checks.check_fit_polynomial(lambda *a: (1, 2)), "a tuple of 2")
    not_yet(checks.check_fit_polynomial(lambda x, y, xv, yv, d: ("abc", 0.0, 0.0)), "array of numbers")
    not_yet(checks.check_fit_polynomial(lambda x, y, xv, yv, d: (np.zeros(d + 1), "0", 0.0)), "should be a number")
    not_yet(checks.check_fit_polynomial(42), "expected a function")


def test_check_random_labels_on_nonsense():
    not_yet(checks.check_random_labels(type("R", (), {})), "expected a function", "got the class R")
    not_yet(checks.check_random_labels(lambda y: y), "the check calls random_labels(y, rng)")
    not_yet(checks.check_random_labels(lambda y, rng: None), "returned None")
    not_yet(checks.check_random_labels(lambda y, rng: (y, rng)), "array of labels")
    not_yet(checks.check_random_labels(lambda y, rng: "labels"), "shape")


@pytest.mark.parametrize("answer", [np.array([1, 2]), [0.1], (256,), True, "wide", torch.tensor([1.0, 2.0])])
def test_question_checks_on_nonsense_answers(answer):
    from lessons_lib.history import History

    h = History(epoch=[0], train_loss=[1.0], train_acc=[0.9], val_loss=[1.0], val_acc=[0.5])
    rows = [lab.SweepRow(w, 10, [h]) for w in (2, 256)]
    rand = lab.Memorization([h, h], [h, h], [1, 2])
    poly = lab.polynomial_sweep(degrees=range(4))
    for result in (checks.check_chance_level(answer, rand), checks.check_largest_gap(answer, rows),
                   checks.check_best_degree(answer, poly)):
        assert result.status == "wrong", result.message
