"""Lesson 09 · the idea from scratch, measured: SimHash collision rates and a numpy network trained with the
learner's own ``simhash`` and ``active_units`` (:mod:`lessons_lib.hashing.reference`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ..data import Splits
from ..lsh import check_active_fraction, check_k_l, units_kept
from ..numpy_layers import (
    linear_backward,
    linear_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from ..seeds import numpy_rng
from ..validate import BadArgument, check_choice, check_float
from . import reference
from .layer import _seed, _size
from .reference import LookupFn, SimHashFn


# --- SimHash statistics, measured with any simhash(x, planes) ----------------------------------------
def pairs_at_angle(rng: np.random.Generator, n: int, dim: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random unit vectors x (n, dim) and for each a unit vector y at exactly ``angle`` (radians) to it,
    in a random direction."""
    x = rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u = rng.standard_normal((n, dim))
    u -= (u * x).sum(1, keepdims=True) * x
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return x, math.cos(angle) * x + math.sin(angle) * u


def agreeing_bits(codes_x: np.ndarray, codes_y: np.ndarray, K: int) -> np.ndarray:
    """How many of the K bits two codes share, elementwise (whatever order the bits were packed in)."""
    differ = np.asarray(codes_x, dtype=np.int64) ^ np.asarray(codes_y, dtype=np.int64)
    return K - ((differ[..., None] >> np.arange(K)) & 1).sum(-1)


@dataclass
class CollisionRates:
    """SimHash collisions of random pairs at known angles: per bit (theory ``1 - angle/pi``) and per whole K-bit
    code, i.e. the same bucket of one table (theory ``(1 - angle/pi)**K``). ``bits`` and ``codes``: how many
    (pair, bit) and (pair, table) samples each rate is measured on."""

    angles: np.ndarray
    per_bit: np.ndarray
    per_bucket: np.ndarray
    K: int
    bits: int
    codes: int

    def at(self, degrees: float) -> float:
        """The measured per-bit rate at the angle closest to ``degrees``."""
        return float(self.per_bit[np.argmin(np.abs(np.degrees(self.angles) - degrees))])

    def binomial_halfwidth(self, z: float = 3.0) -> np.ndarray:
        """``z`` binomial standard errors of the per-bit rate, around the theory."""
        p = 1 - self.angles / np.pi
        return z * np.sqrt(p * (1 - p) / self.bits)


def collision_rates(angles: Sequence[float], *, simhash: SimHashFn = reference.simhash, dim: int = 32,
                    n_pairs: int = 1000, K: int = 6, L: int = 16, seed: int | None = None) -> CollisionRates:
    """Hash ``n_pairs`` random pairs at each angle (radians) with ``simhash`` and L tables of K random
    hyperplanes; measure how often one bit, and a whole code, agree."""
    K, L = _size(K, "K", 30, "bits per table, e.g. 6"), _size(L, "L", 10_000, "tables, e.g. 16")
    dim, n_pairs = _size(dim, "dim", 100_000, "e.g. 32"), _size(n_pairs, "n_pairs", 10**6, "e.g. 1000")
    if dim < 2:
        raise BadArgument(f"dim={dim}: two vectors at an angle need at least 2 dimensions")
    fix = "angles in radians, from 0 to pi (np.radians(degrees))"
    angles = [check_float(a, f"angles[{i}]", low=0.0, high=math.pi, fix=fix)
              for i, a in enumerate(np.atleast_1d(np.asarray(angles, dtype=object)))]
    if not angles:
        raise BadArgument("angles=[]: give at least one angle (radians)")
    rng = numpy_rng(_seed(seed), stream=91)
    planes = rng.standard_normal((L, K, dim))
    per_bit, per_bucket = [], []
    for a in angles:
        x, y = pairs_at_angle(rng, n_pairs, dim, a)
        cx, cy = np.asarray(simhash(x, planes)), np.asarray(simhash(y, planes))
        per_bit.append(agreeing_bits(cx, cy, K).mean() / K)
        per_bucket.append(np.mean(cx == cy))
    return CollisionRates(np.asarray(angles, dtype=float), np.asarray(per_bit), np.asarray(per_bucket), K,
                          n_pairs * L * K, n_pairs * L)


# --- the idea from scratch, trained (numpy; the learner's functions plug in) ----------------------------
@dataclass
class ScratchRun:
    """One numpy training run of ``n_in -> width (sampled, ReLU) -> classes`` built on :mod:`.reference`.

    ``val_acc`` per epoch; ``overlap``: mean share of the units picked for the validation inputs that are among
    the exact top-k pre-activations (after training); ``chance``: k / width, a random pick's expected overlap;
    ``seconds``: training time (evaluation excluded); ``code``: whose simhash and lookup picked the units."""

    picker: str
    active_fraction: float
    k: int
    val_acc: list[float]
    overlap: float
    chance: float
    seconds: float
    code: str = "the library's reference"


class _LazyAdam:
    """Adam that moves only the rows it is given (the paper updates only the active units); bias correction by
    the global step."""

    def __init__(self, params: list[np.ndarray], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray], rows: list[np.ndarray | slice]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v, r in zip(self.params, grads, self.m, self.v, rows):
            m[r] = b1 * m[r] + (1 - b1) * g[r]
            v[r] = b2 * v[r] + (1 - b2) * g[r] ** 2
            p[r] -= self.lr * (m[r] / (1 - b1**self.t)) / (np.sqrt(v[r] / (1 - b2**self.t)) + self.eps)


def scratch_experiment(data: Splits, *, picker: str = "lsh", active_fraction: float = 0.05, width: int = 1000,
                       epochs: int = 1, lr: float = 5e-3, batch_size: int = 128, K: int = 6, L: int = 50,
                       pool_dim: int = 8, simhash: SimHashFn = reference.simhash,
                       lookup: LookupFn = reference.active_units, seed: int | None = None) -> ScratchRun:
    """Train the from-scratch sampled network with ``picker`` "lsh" (``simhash`` + ``lookup``: yours or the
    reference) or "random"; Adam updates only the rows of the units some example of the batch used."""
    picker = check_choice(picker, "picker", ("lsh", "random"))
    active_fraction = check_active_fraction(active_fraction)
    width, epochs = _size(width, "width", fix="hidden units, e.g. 1000"), _size(epochs, "epochs", 10_000)
    batch_size, pool_dim = _size(batch_size, "batch_size", 10**7), _size(pool_dim, "pool_dim", data.n_features)
    lr = check_float(lr, "lr", low=0.0, low_open=True, fix="Adam's step size, e.g. 5e-3")
    check_k_l(K, L)
    for name, fn in (("simhash", simhash), ("lookup", lookup)):
        if not callable(fn):
            raise BadArgument(f"{name}={fn!r:.60}: pass a function (yours, or the reference's)")
    rng = numpy_rng(_seed(seed), stream=94)
    x_tr, y_tr = data.x_train.double().numpy(), data.y_train.numpy()
    x_val, y_val = data.x_val.double().numpy(), data.y_val.numpy()
    n_in, k = data.n_features, units_kept(width, active_fraction)
    lim1, lim2 = 1 / math.sqrt(n_in), 1 / math.sqrt(width)  # PyTorch's default nn.Linear initialisation
    w1, b1 = rng.uniform(-lim1, lim1, (width, n_in)), rng.uniform(-lim1, lim1, width)
    w2, b2 = rng.uniform(-lim2, lim2, (width, data.n_classes)), rng.uniform(-lim2, lim2, data.n_classes)
    pick = reference.LshPicker(n_in, width, k, K=K, L=L, pool_dim=pool_dim, rng=rng, simhash=simhash,
                               lookup=lookup) if picker == "lsh" else reference.RandomPicker(width, k, rng=rng)
    opt = _LazyAdam([w1, b1, w2, b2], lr)

    def train_step(x: np.ndarray, y: np.ndarray, step: int) -> None:
        active = pick(x, w1, step)
        h, cache1 = reference.sampled_forward(x, w1, b1, active)
        logits, cache2 = linear_forward(h, w2, b2)
        _, cache3 = softmax_cross_entropy_forward(logits, y)
        dh, dw2, db2 = linear_backward(softmax_cross_entropy_backward(cache3), cache2)
        _, dw1, db1 = reference.sampled_backward(dh, cache1)
        used = np.unique(active)
        opt.step([dw1, db1, dw2, db2], [used, used, slice(None), slice(None)])

    accs, seconds, step = [], 0.0, 0
    with threadpool_limits(1):  # small matrices: numpy's BLAS on one thread (two stall each other on a busy box)
        for _ in range(epochs):
            t0 = time.perf_counter()
            for i in np.array_split(rng.permutation(len(x_tr)), math.ceil(len(x_tr) / batch_size)):
                train_step(x_tr[i], y_tr[i], step)
                step += 1
            seconds += time.perf_counter() - t0
            active = pick(x_val, w1)
            logits = reference.sampled_forward(x_val, w1, b1, active)[0] @ w2 + b2
            accs.append(float(np.mean(logits.argmax(1) == y_val)))
        top = np.argsort(-(x_val @ w1.T + b1), axis=1)[:, :k]
    overlap = np.mean([len(np.intersect1d(a, t)) / k for a, t in zip(active, top)])
    mine = [name for name, fn, ref in (("simhash", simhash, reference.simhash),
                                       ("active_units", lookup, reference.active_units)) if fn is not ref]
    code = f"your {' and '.join(mine)}" if mine else "the library's reference"
    if picker == "random":
        code = "a random draw (no hashing)"
    return ScratchRun(picker, active_fraction, k, accs, float(overlap), k / width, seconds, code)
