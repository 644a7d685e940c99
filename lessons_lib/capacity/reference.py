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
    coef, *_ = np.linalg.lstsq(powers(x_train, degree), np.asarray(y_train, dtype=float), rcond=None)
    return coef, mse(predict(coef, x_train), y_train), mse(predict(coef, x_val), y_val)


def random_labels(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of the labels ``y`` (shape (n,), integer classes), drawn from ``rng``.

    Every class keeps its count; which input carries which label is random, independent of the input. ``y`` itself
    is not changed (``rng.shuffle`` would shuffle it in place: the true labels would be gone too).
    """
    return rng.permutation(np.asarray(y))
