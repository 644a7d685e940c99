"""Lesson 03 · inverted dropout from scratch, in numpy: the layer, its backward pass, its gradient check, and an
MLP that uses it (built from the core layers of :mod:`lessons_lib.numpy_layers`, trained with Adam).

In training, each unit of ``x`` is dropped (set to 0) with probability ``p`` — the probability to DROP, everywhere
in this course — and each kept unit is scaled by ``1 / (1 - p)``::

    out = x * keep / (1 - p),      keep ~ Bernoulli(1 - p), independently per unit

so ``E[out] = x``: at evaluation time the layer is the identity (no mask, no rescaling, no random number drawn).
That is the *inverted* form; the original paper scaled at evaluation instead. The backward pass reuses the
forward's mask, which the cache carries: ``dx = dout * keep / (1 - p)``.

Note what dropout does *not* save: a dense matrix product after the layer still multiplies the zeros, so the
dropped units cost as much compute as the kept ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import numpy_layers as nl
from ..gradcheck import numerical_gradient_array, relative_error
from ..seeds import get_seed, numpy_rng
from ..validate import BadArgument, check_p


def _activation(x, name: str) -> np.ndarray:
    """``x`` as a numeric numpy array (lists are converted); bools, strings and objects are refused."""
    if isinstance(x, (str, bytes)) or x is None:
        raise BadArgument(f"{name}={x!r}: must be a numeric numpy array, e.g. np.ones((4, 8))")
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists and the like
        raise BadArgument(f"{name}: cannot be read as a numeric array ({e}); pass a numpy array") from None
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise BadArgument(f"{name} has dtype {a.dtype}: must be a numeric (float or integer) array; use "
                          f"{name}.astype(np.float64)")
    return a


def dropout_forward(x: np.ndarray, p: float, train: bool = True,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """Inverted dropout of ``x`` (any shape) with drop probability ``p`` in [0, 1).

    Returns ``(out, cache)`` with ``cache = (keep, p)``: ``keep`` is the bool mask of ``x.shape`` (True = kept),
    or None when nothing was drawn: in eval mode (``train=False``) and at ``p = 0`` the layer returns ``x`` itself.
    ``rng``: the numpy Generator the mask is drawn from (None: a fresh, unseeded one).
    """
    p = check_p(p)
    x = _activation(x, "x")
    if not isinstance(train, (bool, np.bool_)):
        raise BadArgument(f"train={train!r}: must be True (training: draw a mask) or False (evaluation: identity)")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise BadArgument(f"rng={rng!r}: must be a numpy Generator (np.random.default_rng(seed)) or None")
    if not train or p == 0.0:
        return x, (None, p)
    if rng is None:
        rng = np.random.default_rng()
    keep = rng.random(x.shape) >= p  # uniform in [0, 1): below p with probability p, then dropped
    return x * keep / (1.0 - p), (keep, p)


def dropout_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """d loss / d x, given ``dout`` = d loss / d out and the forward's ``cache = (keep, p)``.

    The same mask and scale as the forward pass (out is linear in x); the identity when ``keep`` is None.
    ``dout`` must have the mask's shape exactly: a gradient of another shape is refused, never broadcast.
    """
    if not isinstance(cache, tuple) or len(cache) != 2:
        raise BadArgument(f"cache must be the forward's (keep, p) pair, got {type(cache).__name__}"
                          + (f" of length {len(cache)}" if isinstance(cache, (tuple, list)) else "")
                          + ": pass the second value dropout_forward returned")
    keep, p = cache
    dout = _activation(dout, "dout")
    if keep is None:
        return dout
    if not isinstance(keep, np.ndarray) or keep.dtype != bool:
        raise BadArgument("cache[0] must be the forward's bool keep mask (or None in eval mode), got "
                          f"{type(keep).__name__}: pass the cache dropout_forward returned")
    if dout.shape != keep.shape:
        raise BadArgument(f"dout has shape {dout.shape} but the forward's mask has shape {keep.shape}: the upstream "
                          "gradient must have the shape of the layer's output (no broadcasting)")
    return dout * keep / (1.0 - check_p(p, "cache[1] (p)"))


def gradient_error(forward=dropout_forward, backward=dropout_backward, shape: tuple[int, int] = (5, 7),
                   p: float = 0.3, seed: int = 0) -> float:
    """Max relative error of ``backward`` against centred differences of ``forward`` (float64).

    The mask is held fixed while differentiating, as within one training step: every evaluation of the forward
    draws from a Generator seeded alike, and the backward gets that same draw's cache. A correct pair gives
    ~1e-10; a wrong scale or a new mask gives ~1e-1 or more.
    """
    data = np.random.default_rng(seed)
    x, dout = data.standard_normal(shape), data.standard_normal(shape)

    def fixed_mask_forward() -> np.ndarray:
        return forward(x, p, True, np.random.default_rng(seed + 1))[0]

    _, cache = forward(x, p, True, np.random.default_rng(seed + 1))
    return relative_error(backward(dout, cache), numerical_gradient_array(fixed_mask_forward, x, dout))


# --------------------------------------------------------------------------------------------------
# A network that uses it
# --------------------------------------------------------------------------------------------------
class NumpyNet:
    """``sizes[0] -> sizes[1] -> ... -> sizes[-1]``: linear + ReLU + dropout ``p`` per hidden layer, linear output.

    ``forward`` / ``backward``: the dropout pair used (signatures of :func:`dropout_forward`, :func:`dropout_backward`).
    Initialized like ``torch.nn.Linear`` (uniform in ±1/sqrt(fan_in)), trained with Adam. Masks come from the
    Generator passed to :meth:`loss_and_grads` (held fixed by re-seeding it, for a gradient check).
    """

    def __init__(self, sizes: Sequence[int], p: float, forward=dropout_forward, backward=dropout_backward,
                 seed: int | None = None, lr: float = 2e-3, dtype: type = np.float32):
        seed = get_seed() if seed is None else seed
        init = numpy_rng(seed, stream=30)
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(init.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
            self.biases.append(init.uniform(-bound, bound, fan_out).astype(dtype))
        self.p, self.forward, self.backward, self.lr = p, forward, backward, lr
        self.mask_rng = numpy_rng(seed, stream=31)
        self.shuffle_rng = numpy_rng(seed, stream=32)
        self.adam = [(np.zeros_like(w), np.zeros_like(w)) for w in self.params]
        self.steps = 0

    @property
    def params(self) -> list[np.ndarray]:
        return [a for pair in zip(self.weights, self.biases) for a in pair]  # W1, b1, W2, b2, ...

    def logits(self, x: np.ndarray, train: bool = False, rng: np.random.Generator | None = None) -> tuple:
        """(logits, caches); dropout is on only when ``train``."""
        caches = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x, lin = nl.linear_forward(x, w, b)
            if i == last:
                caches.append((lin, None, None))
                break
            x, act = nl.relu_forward(x)
            x, drop = self.forward(x, self.p, train, rng)
            caches.append((lin, act, drop))
        return x, caches

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, list]:
        """Mean cross-entropy of a training-mode pass, and its gradients in the order of :attr:`params`."""
        logits, caches = self.logits(x, train=True, rng=rng)
        loss, ce = nl.softmax_cross_entropy_forward(logits, y)
        d = nl.softmax_cross_entropy_backward(ce)
        grads: list[np.ndarray] = []
        for i in reversed(range(len(caches))):
            lin, act, drop = caches[i]
            if drop is not None:
                d = nl.relu_backward(self.backward(d, drop), act)
            d, dw, db = nl.linear_backward(d, lin, need_dx=i > 0)
            grads[:0] = [dw, db]
        return loss, grads

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One Adam step (betas 0.9, 0.999) on a batch; returns the batch loss."""
        loss, grads = self.loss_and_grads(x, y, self.mask_rng)
        self.steps += 1
        c1, c2 = 1 - 0.9**self.steps, 1 - 0.999**self.steps
        for w, g, (m, v) in zip(self.params, grads, self.adam):
            m += 0.1 * (g - m)
            v += 0.001 * (g * g - v)
            w -= self.lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)
        return loss

    def evaluate(self, x: np.ndarray, y: np.ndarray, train: bool = False,
                 rng: np.random.Generator | None = None) -> tuple[float, float]:
        """(mean cross-entropy, accuracy); ``train=True`` evaluates with dropout on (the pitfall)."""
        logits, _ = self.logits(x, train=train, rng=rng)
        return nl.softmax_cross_entropy_forward(logits, y)[0], float((logits.argmax(1) == y).mean())
