"""Layers from scratch in numpy: each a ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache)`` pair.

The cache holds exactly what the backward pass needs. Shapes: ``x`` is (batch, features). Gradient checks
use :mod:`lessons_lib.gradcheck` (centred differences, relative error); see :func:`gradient_check_errors`.

Dropout is *inverted* dropout: in training each unit is dropped with probability ``p`` (the probability to
DROP, everywhere in this course) and the kept ones are scaled by ``1 / (1 - p)``, so the expected output
equals the input and evaluation needs no rescaling (identity).
"""

from __future__ import annotations

import numpy as np

from .gradcheck import numerical_gradient, numerical_gradient_array, relative_error
from .masks import RNG, bernoulli_mask
from .validate import check_p


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
    return (dout @ w.T if need_dx else None), x.T @ dout, dout.sum(axis=0)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)``; the cache is the bool mask ``x > 0``."""
    pos = x > 0
    return x * pos, pos


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return dout * cache


def softmax_cross_entropy_forward(logits: np.ndarray, y: np.ndarray) -> tuple[float, tuple]:
    """Mean cross-entropy (nats) of ``logits`` (n, classes) against integer labels ``y`` (n,)."""
    if logits.ndim != 2 or y.shape != (logits.shape[0],):
        raise ValueError(f"need logits (n, classes) and labels (n,), got {logits.shape} and {y.shape}")
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


def dropout_forward(x: np.ndarray, p: float, train: bool = True, rng: RNG = None,
                    method: str = "auto") -> tuple[np.ndarray, tuple]:
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the rest by 1/(1-p).

    ``train=False`` or ``p = 0``: identity (no random number drawn). ``method`` and ``rng`` choose the mask
    generator (:func:`lessons_lib.masks.bernoulli_mask`). The cache is ``(keep_mask or None, scale)``.
    """
    p = check_p(p)
    if not train or p == 0.0:
        return x, (None, 1.0)
    keep = bernoulli_mask(x.shape, p, method=method, rng=rng)
    scale = 1.0 / (1.0 - p)
    out = x * keep
    out *= scale
    return out, (keep, scale)


def dropout_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient through dropout: the same mask and scale as the forward pass (identity if none)."""
    keep, scale = cache
    if keep is None:
        return dout
    dx = dout * keep
    dx *= scale
    return dx


def gradient_check_errors(seed: int = 0, n: int = 5, d_in: int = 4, hidden: int = 6, n_classes: int = 3,
                          p: float = 0.5) -> dict[str, float]:
    """Relative errors (analytic vs centred differences, float64) for each layer and a small dropout net.

    The dropout mask is drawn once and held fixed while differentiating (as it is within one step).
    Returns ``{name: max relative error}``; a correct backward gives ~1e-7 or less.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in))
    w1, b1 = rng.standard_normal((d_in, hidden)), rng.standard_normal(hidden)
    w2, b2 = rng.standard_normal((hidden, n_classes)), rng.standard_normal(n_classes)
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

    dout = rng.standard_normal(x.shape)
    _, cache = dropout_forward(x, p, rng=rng)
    keep, scale = cache

    def drop_fixed() -> np.ndarray:
        return x * keep * scale

    errors["dropout dx"] = relative_error(dropout_backward(dout, cache), numerical_gradient_array(drop_fixed, x, dout))

    # a whole net: linear -> relu -> dropout -> linear -> softmax-CE, mask fixed
    keep_h = bernoulli_mask((n, hidden), p, rng=rng)

    def net_loss() -> float:
        h, _ = relu_forward(linear_forward(x, w1, b1)[0])
        logits = linear_forward(h * keep_h / (1 - p), w2, b2)[0]
        return softmax_cross_entropy_forward(logits, y)[0]

    # whole-net errors are norm-wise (||a - n|| / (||a|| + ||n||)): an element-wise ratio blows up on entries
    # that are nearly zero (a hidden unit barely active), where centred differences have ~1e-10 absolute noise
    grads = net_gradients(x, y, (w1, b1, w2, b2), keep_h, p)
    for name, param, g in zip(("net dW1", "net db1", "net dW2", "net db2"), (w1, b1, w2, b2), grads):
        errors[name] = norm_relative_error(g, numerical_gradient(net_loss, param))
    return errors


def norm_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / max(||a|| + ||b||, 1e-12)`` (Euclidean norms over all elements)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12))


def net_gradients(x: np.ndarray, y: np.ndarray, params: tuple, keep: np.ndarray, p: float) -> list[np.ndarray]:
    """Analytic gradients (dW1, db1, dW2, db2) of the 1-hidden-layer dropout net with a given keep mask."""
    w1, b1, w2, b2 = params
    a, c1 = linear_forward(x, w1, b1)
    h, c2 = relu_forward(a)
    scale = 1.0 / (1.0 - p)
    hd, c3 = h * keep * scale, (keep, scale)
    logits, c4 = linear_forward(hd, w2, b2)
    _, c5 = softmax_cross_entropy_forward(logits, y)
    dlogits = softmax_cross_entropy_backward(c5)
    dhd, dw2, db2 = linear_backward(dlogits, c4)
    da = relu_backward(dropout_backward(dhd, c3), c2)
    _, dw1, db1 = linear_backward(da, c1)
    return [dw1, db1, dw2, db2]
