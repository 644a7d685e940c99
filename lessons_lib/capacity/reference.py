"""Lesson 01 · capacity from scratch: the file to read after the notebook.

Two small ideas carry the lesson:

* **capacity you can count**: a polynomial of degree ``d`` has ``d + 1`` coefficients. Fit it by least squares
  to the training points and measure the mean squared error on the training points *and* on fresh validation
  points: the first only falls as ``d`` grows, the second falls and then rises (underfitting, then overfitting).
* **labels a network can only memorize**: a permutation of the training labels keeps every class's count (so
  the task looks the same: ten classes, same balance) but cuts every link between an input and its label. What
  a network learns from them cannot carry over to new inputs (Zhang et al., 2017).
"""

from __future__ import annotations

import numpy as np

from ..validate import BadArgument, check_int


def _points(x: object, y: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` as 1-D float arrays of the same length, finite (else a :class:`BadArgument` saying which)."""
    try:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument(f"the {what} points must be arrays of numbers, got {type(x).__name__} and "
                          f"{type(y).__name__}") from None
    if x.ndim != 1 or y.shape != x.shape or len(x) == 0:
        raise BadArgument(f"the {what} points must be two 1-D arrays of the same length >= 1 (x[i], y[i]), got shapes "
                          f"{x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise BadArgument(f"the {what} points contain NaN or inf: drop those points first")
    return x, y


def powers(x: np.ndarray, degree: int) -> np.ndarray:
    """The design matrix of a polynomial: shape (n, degree + 1), column ``k`` is ``x**k`` (lowest power first)."""
    x = np.asarray(x, dtype=float)
    return x[:, None] ** np.arange(degree + 1)


def predict(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The polynomial ``sum_k coef[k] * x**k`` at the points ``x`` (shape (n,))."""
    return powers(x, len(coef) - 1) @ np.asarray(coef, dtype=float)


def mse(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error: the average over the points of (prediction - target)**2 (not the sum, not its root)."""
    return float(np.mean((np.asarray(prediction) - np.asarray(target)) ** 2))


def fit_polynomial(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   degree: int) -> tuple[np.ndarray, float, float]:
    """Least-squares polynomial of ``degree`` through the training points.

    Returns ``(coef, train_mse, val_mse)``: ``coef`` of shape (degree + 1,), ``coef[k]`` multiplies ``x**k``; the
    mean squared errors of that polynomial on the training points and on the validation points. ``lstsq`` solves
    through an SVD, so it stays accurate where the normal equations would square the (large) condition number of
    the power columns.
    """
    degree = check_int(degree, "degree", low=0, fix="the polynomial's degree, e.g. 3 (a constant is degree 0)")
    (x_train, y_train), (x_val, y_val) = _points(x_train, y_train, "training"), _points(x_val, y_val, "validation")
    coef, *_ = np.linalg.lstsq(powers(x_train, degree), y_train, rcond=None)
    return coef, mse(predict(coef, x_train), y_train), mse(predict(coef, x_val), y_val)


def random_labels(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of the labels ``y`` (shape (n,), integer classes), drawn from ``rng``.

    Every class keeps its count; which input carries which label is random, independent of the input. ``y`` itself
    is not changed (``rng.shuffle`` would shuffle it in place: the true labels would be gone too).
    """
    if not isinstance(rng, np.random.Generator):
        raise BadArgument(f"rng={rng!r:.60}: must be a numpy Generator, e.g. np.random.default_rng(0) or "
                          "lessons_lib.seeds.numpy_rng()")
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or len(y) == 0):
        raise BadArgument(f"y must be a 1-D array of integer class labels, got shape {y.shape} and dtype {y.dtype}")
    return rng.permutation(y)
