"""Layers from scratch in numpy: each a ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache)`` pair.

The generic layers every from-scratch lesson builds on: linear, ReLU, and softmax + cross-entropy. The cache
holds exactly what the backward pass needs. Shapes: ``x`` is (batch, features). Gradient checks use
:mod:`lessons_lib.gradcheck` (centred differences, relative error); see :func:`gradient_check_errors`.
Lesson layers (dropout, batch norm, ...) live in their lesson's ``reference.py``.
"""

from __future__ import annotations

import numpy as np

from .gradcheck import numerical_gradient, numerical_gradient_array, relative_error


def _same_shape(dout: np.ndarray, shape: tuple, what: str) -> None:
    """A backward's upstream gradient must have its forward output's shape (numpy would broadcast it silently)."""
    if np.shape(dout) != tuple(shape):
        raise ValueError(f"{what}: dout has shape {np.shape(dout)} but the forward output had shape {tuple(shape)}; "
                         "pass d loss / d out of that very output")


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """``out = x @ w + b`` with x (n, d_in), w (d_in, d_out), b (d_out,)."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0] or b.shape != (w.shape[1],):
        raise ValueError(f"linear_forward needs x (n, d_in), w (d_in, d_out), b (d_out,); got {x.shape}, "
                         f"{w.shape}, {b.shape}")
    return x @ w + b, (x, w)


def linear_backward(dout: np.ndarray, cache: tuple, need_dx: bool = True) -> tuple:
    """Gradients ``(dx, dw, db)`` of a loss given ``dout`` = d loss / d out (``dx`` None if not ``need_dx``,
    e.g. for the first layer, whose input is data)."""
    x, w = cache
    _same_shape(dout, (x.shape[0], w.shape[1]), "linear_backward")
    return (dout @ w.T if need_dx else None), x.T @ dout, dout.sum(axis=0)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)``; the cache is the bool mask ``x > 0``."""
    pos = x > 0
    return x * pos, pos


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """``dout`` where the input was positive, 0 elsewhere (``dout`` has the forward output's shape)."""
    _same_shape(dout, cache.shape, "relu_backward")
    return dout * cache


def softmax_cross_entropy_forward(logits: np.ndarray, y: np.ndarray) -> tuple[float, tuple]:
    """Mean cross-entropy (nats) of ``logits`` (n, classes) against integer labels ``y`` (n,)."""
    if logits.ndim != 2 or y.shape != (logits.shape[0],):
        raise ValueError(f"need logits (n, classes) and labels (n,), got {logits.shape} and {y.shape}")
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= logits.shape[1])):
        raise ValueError(f"labels y must be integers in 0..{logits.shape[1] - 1} (one per row of logits), got dtype "
                         f"{y.dtype} and values {y.min() if y.size else '-'}..{y.max() if y.size else '-'}: a label "
                         "of -1 would silently score the last class")
    shifted = logits - logits.max(axis=1, keepdims=True)  # stable: exp never overflows
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    n = logits.shape[0]
    loss = -float(log_probs[np.arange(n), y].mean())
    return loss, (log_probs, y)


def softmax_cross_entropy_backward(cache: tuple, dloss: float = 1.0) -> np.ndarray:
    """d loss / d logits = (softmax - onehot) / n, times ``dloss``."""
    log_probs, y = cache
    n = log_probs.shape[0]
    d = np.exp(log_probs)
    d[np.arange(n), y] -= 1.0
    return d * (dloss / n)


def gradient_check_errors(seed: int = 0, n: int = 5, d_in: int = 4, hidden: int = 6,
                          n_classes: int = 3) -> dict[str, float]:
    """Relative errors (analytic vs centred differences, float64) of each layer's backward.

    Returns ``{layer gradient: max relative error}``; a correct backward gives ~1e-7 or less.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in))
    w1, b1 = rng.standard_normal((d_in, hidden)), rng.standard_normal(hidden)
    y = rng.integers(0, n_classes, n)
    errors: dict[str, float] = {}

    dout = rng.standard_normal((n, hidden))
    out, cache = linear_forward(x, w1, b1)
    dx, dw, db = linear_backward(dout, cache)
    errors["linear dx"] = relative_error(dx, numerical_gradient_array(lambda: linear_forward(x, w1, b1)[0], x, dout))
    errors["linear dw"] = relative_error(dw, numerical_gradient_array(lambda: linear_forward(x, w1, b1)[0], w1, dout))
    errors["linear db"] = relative_error(db, numerical_gradient_array(lambda: linear_forward(x, w1, b1)[0], b1, dout))

    xr = x + np.sign(x) * 0.05  # keep clear of the kink at 0, where the derivative is not defined
    dout = rng.standard_normal(xr.shape)
    _, cache = relu_forward(xr)
    errors["relu dx"] = relative_error(relu_backward(dout, cache),
                                       numerical_gradient_array(lambda: relu_forward(xr)[0], xr, dout))

    logits = rng.standard_normal((n, n_classes))
    _, cache = softmax_cross_entropy_forward(logits, y)
    errors["softmax-CE dlogits"] = relative_error(
        softmax_cross_entropy_backward(cache),
        numerical_gradient(lambda: softmax_cross_entropy_forward(logits, y)[0], logits))
    return errors
