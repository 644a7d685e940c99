"""Numerical gradient checking for the from-scratch (numpy) layers, cs231n style.

Compare an analytic gradient with centred differences ``(f(x+h) - f(x-h)) / 2h`` using the relative
error ``|a - n| / max(|a| + |n|, tiny)``, elementwise maximum. In float64, a correct backward gives
about 1e-7 or less; 1e-2 or more means a bug.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f / d x by centred differences; ``f`` reads ``x`` (modified in place, then restored).

    ``x`` must be a floating-point array (float64 for a meaningful check): ``x + h`` on integers would truncate."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise ValueError(f"x must be a floating-point numpy array to differentiate, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}: pass x.astype(np.float64)")
    if h <= 0 or not np.isfinite(h):
        raise ValueError(f"h={h!r}: the step must be a small positive number, e.g. 1e-5")
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
        it.iternext()
    return grad


def numerical_gradient_array(f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray,
                             h: float = 1e-5) -> np.ndarray:
    """Gradient of ``sum(f() * dout)`` w.r.t. ``x`` for an array-valued ``f`` (a layer's forward)."""
    return numerical_gradient(lambda: float(np.sum(f() * dout)), x, h)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max over elements of |a - b| / max(|a| + |b|, 1e-12)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-12)))
