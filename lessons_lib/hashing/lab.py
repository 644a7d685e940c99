"""Lesson 09 — randomized hashing: the apparatus (experiments, the PyTorch sampled layer, sweeps, claims, panel).

Seed 003 (Spring & Shrivastava, "Scalable and Sustainable Deep Learning via Randomized Hashing"): hash
every neuron's weight vector into L tables of K-bit signed-random-projection codes (SimHash); for an
input, look up its own bucket in each table, rank the neurons by how many tables returned them, and
compute only the top fraction. The claim: about 5% of the multiplications, no loss of accuracy.

The idea from scratch (numpy, the learner's own ``simhash`` and ``active_units`` plug in) is
:mod:`lessons_lib.hashing.reference`; :func:`collision_rates` and :func:`scratch_experiment` run it. The fast
PyTorch layer :class:`SampledHidden` and the sweeps use the CSR tables of core :mod:`lessons_lib.lsh`.

What this module follows from the authors' released code (github.com/rdspring1/LSH_DeepLearning):
SimHash with K = 6 bits and L = 100 tables, hidden width 1000, inputs and weights mean-pooled to a few
dimensions before hashing, nodes ranked by collision counts ("histogram") and the top fraction kept,
inactive nodes with zero activation and zero gradient, tables rebuilt on a schedule that thins out,
a dense output layer.

Units: "multiplications" are scalar multiplications (a dot product of length d costs d). A layer
``n_in -> n_out`` costs ``n_in * n_out`` per example forward and as much again for its weight gradient.
``active_fraction`` is the fraction of hidden units KEPT (computed), in (0, 1].
"""

from __future__ import annotations

import math
import numbers
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from ..callbacks import Callback
from ..claims import Claims
from ..data import Splits, load
from ..device import pick_device
from ..lsh import LshIndex, RebuildSchedule, check_active_fraction, check_k_l, topk_by_counts, units_kept
from ..numpy_layers import (
    linear_backward,
    linear_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from ..seeds import check_seed, get_seed, numpy_rng, replicate_seeds, seed_everything, torch_generator
from ..stats import Interval, Spread, mean_interval, median_range, paired_interval, verdict
from ..timing import Timing, time_interleaved
from ..training import History, evaluate, fit
from ..validate import BadArgument, check_choice, check_float, check_int
from . import reference
from .reference import LookupFn, SimHashFn

SELECTORS = ("lsh", "random", "topk", "dense", "dropout")
MAX_UNITS = 1_000_000  # layer sizes: a million units of 40 inputs is ~160 MB of weights


def _size(value: object, name: str, high: int = MAX_UNITS, fix: str = "") -> int:
    """A whole number in [1, ``high``] (numpy integers accepted; bools, fractions, NaN refused): BadArgument."""
    return check_int(value, name, low=1, high=high, fix=fix)


def _seed(seed: object) -> int | None:
    return None if seed is None else check_seed(seed)
MODES = ("per_example", "union")


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


# --- multiplication counts -----------------------------------------------------------------------------
@dataclass
class MultFractions:
    """A layer's multiplications as fractions of the dense layer's: the layer itself, the selection (hashing
    queries, or all pre-activations for the top-k oracle), the table rebuilds, and their total."""

    layer: float
    selection: float
    rebuild: float

    @property
    def total(self) -> float:
        return self.layer + self.selection + self.rebuild

    @property
    def hashing(self) -> float:
        """Selection plus rebuilds: everything spent on choosing the units."""
        return self.selection + self.rebuild


@dataclass
class MultCounter:
    """Scalar multiplications, kept apart: the layer itself, the selection (hashing queries, or all
    pre-activations for the exact top-k oracle), the table rebuilds; and what the dense layer would
    have cost for the same examples."""

    layer: int = 0
    selection: int = 0
    rebuild: int = 0
    dense: int = 0
    examples: int = 0
    rebuilds: int = 0

    def reset(self) -> None:
        self.layer = self.selection = self.rebuild = self.dense = self.examples = self.rebuilds = 0

    @property
    def total(self) -> int:
        return self.layer + self.selection + self.rebuild

    def fractions(self) -> MultFractions:
        """Each count as a fraction of the dense layer's multiplications."""
        d = max(self.dense, 1)
        return MultFractions(self.layer / d, self.selection / d, self.rebuild / d)


@dataclass
class Counters:
    """A layer's multiplication counters in training and in evaluation."""

    train: MultCounter = field(default_factory=MultCounter)
    eval: MultCounter = field(default_factory=MultCounter)

    def mode(self, training: bool) -> MultCounter:
        return self.train if training else self.eval


# --- the PyTorch sampled layer (fast: the CSR tables of core lsh.py) ------------------------------------
class SampledHidden(nn.Module):
    """A ReLU hidden layer ``n_in -> n_out`` that computes only an active set of units per example.

    ``selector``: "lsh" (SimHash tables over the mean-pooled weight rows, queried with the mean-pooled
    input; top units by collision count), "random" (a uniform random subset), "topk" (the exact
    top-k pre-activations: an oracle that needs them all), "dense" (every unit).
    ``mode``: "per_example" (each example gathers its own rows: the algorithm of the paper) or "union"
    (the batch computes the union of its examples' sets with one matrix product, as a GPU would).
    Inactive units output 0 and get zero gradient: only the active rows of ``weight`` and ``bias`` are
    gathered, so autograd never touches the others.
    """

    def __init__(self, n_in: int, n_out: int, *, selector: str = "lsh", active_fraction: float = 0.05,
                 K: int = 6, L: int = 50, pool_dim: int = 8, mode: str = "per_example",
                 schedule: RebuildSchedule | None = None, seed: int | None = None):
        super().__init__()
        selector = check_choice(selector, "selector", ("lsh", "random", "topk", "dense"))
        mode = check_choice(mode, "mode", MODES)
        n_in, n_out = _size(n_in, "n_in", fix="input features, e.g. 40"), _size(n_out, "n_out", fix="e.g. 1000")
        if selector == "lsh":
            check_k_l(K, L)
            pool_dim = _size(pool_dim, "pool_dim", n_in, f"numbers each input is pooled to, 1 to n_in={n_in}")
        self.n_in, self.n_out, self.selector, self.mode = n_in, n_out, selector, mode
        self.active_fraction = 1.0 if selector == "dense" else check_active_fraction(active_fraction)
        self.k = units_kept(n_out, self.active_fraction)
        lin = nn.Linear(n_in, n_out)  # PyTorch's default initialisation
        self.weight, self.bias = nn.Parameter(lin.weight.detach().clone()), nn.Parameter(lin.bias.detach().clone())
        self.seed = get_seed() if seed is None else check_seed(seed)
        self.schedule = schedule or RebuildSchedule()
        self.K, self.L = int(K), int(L)
        self.index = LshIndex(n_in, n_out, K=K, L=L, pool_dim=pool_dim, schedule=self.schedule, seed=self.seed) \
            if selector == "lsh" else None
        self.counters = Counters()
        self.step = 0
        self._gen: torch.Generator | None = None
        self.last_active: torch.Tensor | None = None

    def extra_repr(self) -> str:
        s = f"{self.n_in} -> {self.n_out}, selector={self.selector}, keeps {self.k} ({self.active_fraction:.0%})"
        return s + (f", K={self.K}, L={self.L}, pool={self.index.pool.shape[1]}" if self.index is not None else "")

    # -- randomness on the layer's device, reproducible from the seed
    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed * 7919 + 13)
        return self._gen

    # -- tables
    def rebuild_tables(self) -> None:
        """Hash every (pooled) weight row into the tables; counted in ``counters.train.rebuild`` (or ``.eval``)."""
        c = self.counters.mode(self.training)
        c.rebuild += self.index.rebuild(self.weight)
        c.rebuilds += 1

    def _maybe_rebuild(self) -> None:
        if self.index.due(self.weight, self.step if self.training else None):
            self.rebuild_tables()

    # -- selection
    @torch.no_grad()
    def lsh_counts(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_out) collision counts of each unit with the inputs (tables as they are now)."""
        if self.index.stale(self.weight):
            self.rebuild_tables()
        return self.index.counts(x)

    @torch.no_grad()
    def select(self, x: torch.Tensor, counter: MultCounter | None = None) -> torch.Tensor:
        """(B, k) indices of the active units for each example of ``x``."""
        B, dev = x.shape[0], x.device
        if self.selector == "lsh":
            self._maybe_rebuild()
            idx = topk_by_counts(self.lsh_counts(x), self.k, generator=self._generator(dev), sorted=False)
            if counter is not None:
                counter.selection += B * self.index.mults_per_query
            return idx
        if self.selector == "random":
            scores = torch.rand(B, self.n_out, generator=self._generator(dev), device=dev)
            return scores.topk(self.k, dim=1, sorted=False).indices
        if self.selector == "topk":
            if counter is not None:
                counter.selection += B * self.n_in * self.n_out
            return torch.topk(x @ self.weight.T + self.bias, self.k, dim=1, sorted=False).indices
        return torch.arange(self.n_out, device=dev).expand(B, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"SampledHidden expects (batch, {self.n_in}) inputs, got {tuple(x.shape)}")
        B = x.shape[0]
        counter = self.counters.mode(self.training)
        passes = 2 if (self.training and torch.is_grad_enabled()) else 1  # forward (+ weight gradient)
        counter.dense += passes * B * self.n_in * self.n_out
        counter.examples += B
        if self.selector == "dense":
            counter.layer += passes * B * self.n_in * self.n_out
            return torch.relu(x @ self.weight.T + self.bias)
        idx = self.select(x, counter)
        self.last_active = idx
        if self.training:
            self.step += 1
        if self.mode == "per_example":
            w = self.weight[idx]  # (B, k, n_in): only the active rows
            pre = torch.bmm(w, x.unsqueeze(2)).squeeze(2) + self.bias[idx]
            counter.layer += passes * B * self.k * self.n_in
            return x.new_zeros(B, self.n_out).scatter(1, idx, torch.relu(pre))
        union = torch.unique(idx)
        pre = x @ self.weight[union].T + self.bias[union]  # (B, |union|): every example computes the union
        counter.layer += passes * B * len(union) * self.n_in
        out = x.new_zeros(B, self.n_out)
        out[:, union] = torch.relu(pre)
        return out


def hashed_mlp(n_in: int, width: int, n_out: int, *, selector: str = "lsh", active_fraction: float = 0.05,
               K: int = 6, L: int = 50, pool_dim: int = 8, mode: str = "per_example",
               schedule: RebuildSchedule | None = None, seed: int | None = None) -> nn.Sequential:
    """``n_in -> width (sampled, ReLU) -> n_out`` (dense output layer, logits).

    ``selector="dropout"`` gives the standard baseline instead: a dense hidden layer followed by
    ``torch.nn.Dropout(p = 1 - active_fraction)`` (it computes every unit, then zeros most of them).
    """
    selector = check_choice(selector, "selector", SELECTORS)
    n_in, n_out = _size(n_in, "n_in"), _size(n_out, "n_out")
    width = _size(width, "width", fix="hidden units, e.g. 1000")
    if selector == "dropout":
        p = 1.0 - check_active_fraction(active_fraction)
        return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(p), nn.Linear(width, n_out))
    return nn.Sequential(
        SampledHidden(n_in, width, selector=selector, active_fraction=active_fraction, K=K, L=L, pool_dim=pool_dim,
                      mode=mode, schedule=schedule, seed=seed),
        nn.Linear(width, n_out),
    )


def sampled_layer(model: nn.Module) -> SampledHidden | None:
    """The model's :class:`SampledHidden`, or None (dropout baseline)."""
    return next((m for m in model.modules() if isinstance(m, SampledHidden)), None)


# --- experiments -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defaults:
    """The lesson's default run: MNIST-1D, 40 -> 1000 (sampled) -> 10, Adam, K = 6 bits, L = 50 tables. Every
    comparison is repeated over ``runs`` seeds (the from-scratch numpy run, slower, over ``scratch_runs``)."""

    dataset: str = "mnist1d"
    width: int = 1000
    epochs: int = 3
    lr: float = 5e-3
    batch_size: int = 128
    K: int = 6
    L: int = 50
    pool_dim: int = 8
    runs: int = 5
    scratch_runs: int = 3
    fractions: tuple[float, ...] = (0.02, 0.05, 0.25)


DEFAULTS = Defaults()
SWEEP_STREAM, SCRATCH_STREAM = 9, 10  # seeds.replicate_seeds streams of the sweep's and the scratch runs' seeds


def run_seeds(n: int = DEFAULTS.runs, stream: int = SWEEP_STREAM) -> list[int]:
    """``n`` distinct run seeds, derived from the course seed (another ``LESSONS_SEED`` gives other runs)."""
    return replicate_seeds(check_int(n, "n", low=1, high=1000, fix="the number of seeds, e.g. 5"), stream=stream)


def _seed_list(seeds: Sequence[int] | int, stream: int) -> list[int]:
    """``seeds``: how many (from :func:`run_seeds`) or a list of distinct course seeds."""
    if isinstance(seeds, numbers.Integral) or isinstance(seeds, (bool, float)):
        return run_seeds(seeds, stream)
    if isinstance(seeds, str) or not isinstance(seeds, Sequence):
        raise BadArgument(f"seeds={seeds!r:.60}: a number of runs (e.g. 5) or a list of seeds")
    out = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    if not out or len(set(out)) != len(out):
        raise BadArgument(f"seeds={out!r:.60}: the runs' seeds must be distinct and at least one (a repeated seed "
                          "repeats a run, it is not a new one)")
    return out


def scratch_runs(data: Splits, *, seeds: Sequence[int] | int = DEFAULTS.scratch_runs, **kw) -> list[ScratchRun]:
    """:func:`scratch_experiment` once per seed (``seeds``: a list, or how many from :func:`run_seeds`)."""
    seeds = _seed_list(seeds, SCRATCH_STREAM)
    return [scratch_experiment(data, seed=s, **kw) for s in seeds]


@dataclass
class RunResult:
    """One training run. ``mults`` are the hidden layer's counts over training (fractions of dense)."""

    method: str
    active_fraction: float
    val_acc: float
    test_acc: float
    seconds: float
    step_ms: float
    mults: MultFractions
    history: History
    model: nn.Module = field(repr=False)
    seed: int | None = None

    @property
    def layer(self) -> SampledHidden | None:
        """The model's sampled hidden layer (None for the dropout baseline)."""
        return sampled_layer(self.model)


def experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), method: str = "lsh",
               active_fraction: float = 0.05, width: int = DEFAULTS.width, epochs: int = DEFAULTS.epochs,
               lr: float = DEFAULTS.lr, batch_size: int = DEFAULTS.batch_size, K: int = DEFAULTS.K,
               L: int = DEFAULTS.L, pool_dim: int = DEFAULTS.pool_dim, dataset: str = DEFAULTS.dataset,
               seed: int | None = None, data: Splits | None = None) -> History:
    """Panel experiment: train ``hashed_mlp`` with ``method`` ("lsh", "random", "topk", "dense", "dropout")
    keeping ``active_fraction`` of the hidden units; returns the History (the model is in ``.config``)."""
    method = check_choice(method, "method", SELECTORS)
    seed = seed_everything(_seed(seed))
    data = data if data is not None else load(dataset, seed=seed)
    model = hashed_mlp(data.n_features, width, data.n_classes, selector=method, active_fraction=active_fraction,
                       K=K, L=L, pool_dim=pool_dim, seed=seed)
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks, seed=seed,
            config={"method": method, "active_fraction": active_fraction, "width": width})
    h.config["model"] = model
    return h


def run_one(method: str, active_fraction: float, *, data: Splits, device: str = "cpu", seed: int | None = None,
            **kw) -> RunResult:
    """Train one model and measure it: val/test accuracy, time, the layer's multiplication fractions."""
    seed = get_seed() if seed is None else seed
    h = experiment(method=method, active_fraction=active_fraction, device=device, seed=seed, data=data, **kw)
    model = h.config["model"]
    dev = next(model.parameters()).device
    _, test_acc = evaluate(model, data.x_test.to(dev), data.y_test.to(dev))
    layer = sampled_layer(model)
    # dropout: the dense layer is computed in full, then masked
    mults = layer.counters.train.fractions() if layer is not None else MultFractions(1.0, 0.0, 0.0)
    return RunResult(method, active_fraction, h.val_acc[-1], test_acc, h.total_seconds, h.summary()["step_ms"], mults,
                     h, model, seed)


def _mean_half(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width (0 for a single run)."""
    if len(values) < 2:
        return float(values[0]), 0.0
    iv = mean_interval(values)
    return iv.mean, iv.half_width


def _points(iv: Interval, what: str = "paired runs") -> str:
    """A difference of two fractions in points: ``+17.4 ± 1.2 points (95% CI, 5 paired runs)``."""
    return f"{100 * iv.mean:+.1f} ± {100 * iv.half_width:.1f} points ({iv.level:.0%} CI, {iv.n} {what})"


@dataclass
class Sweep:
    """Runs of several methods at several active fractions, repeated over ``seeds``: run i of every method used
    ``seeds[i]`` (the same initial weights and batch order for every method), on the same data split, so two
    methods compare in pairs, seed by seed."""

    rows: list[RunResult]
    seeds: list[int]

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def fractions(self, method: str) -> list[float]:
        return sorted({r.active_fraction for r in self.rows if r.method == method})

    def runs(self, method: str, active_fraction: float | None = None) -> list[RunResult]:
        """The runs of ``method`` at ``active_fraction`` (the closest one the sweep has; None: its first), one per
        seed, in the order of ``seeds``."""
        fractions = self.fractions(method)
        if not fractions:
            raise ValueError(f"no {method!r} run among {self.methods()}")
        f = fractions[0] if active_fraction is None else min(fractions, key=lambda v: abs(v - active_fraction))
        mine = {r.seed: r for r in self.rows if r.method == method and r.active_fraction == f}
        return [mine[s] for s in self.seeds if s in mine]

    def first(self, method: str, active_fraction: float | None = None) -> RunResult:
        """The run of the first seed (one model to look at)."""
        return self.runs(method, active_fraction)[0]

    def test_acc(self, method: str, active_fraction: float | None = None) -> Interval:
        """Mean test accuracy over the seeds, with its 95% interval."""
        return mean_interval([r.test_acc for r in self.runs(method, active_fraction)])

    def paired_gap(self, a: tuple[str, float | None], b: tuple[str, float | None]) -> Interval:
        """Test accuracy of ``a`` minus ``b`` (each a (method, fraction) pair), seed by seed: mean and 95% interval."""
        ra = {r.seed: r.test_acc for r in self.runs(*a)}
        rb = {r.seed: r.test_acc for r in self.runs(*b)}
        both = [s for s in self.seeds if s in ra and s in rb]
        return paired_interval([ra[s] for s in both], [rb[s] for s in both])


def fraction_sweep(fractions: Sequence[float] = DEFAULTS.fractions, methods: Sequence[str] = ("lsh", "random", "topk"),
                   *, seeds: Sequence[int] | int = DEFAULTS.runs, data: Splits | None = None, device: str = "cpu",
                   include_dense: bool = True, extra: Sequence[tuple[str, float]] = (("dropout", 0.05),),
                   **kw) -> Sweep:
    """Every method at every fraction, a dense run and the ``extra`` (method, fraction) runs, each once per seed
    (``seeds``: a list, or how many from :func:`run_seeds`): the accuracy-vs-work table of the lesson."""
    fractions = [check_active_fraction(f) for f in fractions]
    methods = [check_choice(m, "methods[]", SELECTORS) for m in methods]
    extra = [(check_choice(m, "extra method", SELECTORS), check_active_fraction(f)) for m, f in extra]
    seeds = _seed_list(seeds, SWEEP_STREAM)
    data = data if data is not None else load(kw.pop("dataset", DEFAULTS.dataset), seed=get_seed())
    plan = ([("dense", 1.0)] if include_dense else []) + [(m, f) for m in methods for f in fractions] + list(extra)
    rows = [run_one(m, f, data=data, device=device, seed=s, **kw) for s in seeds for m, f in plan]
    return Sweep(rows, seeds)


def find_run(rows: Sequence[RunResult], method: str, active_fraction: float | None = None) -> RunResult:
    """The run of ``method`` at ``active_fraction`` (the closest one; any fraction if None)."""
    mine = [r for r in rows if r.method == method]
    if not mine:
        raise ValueError(f"no {method!r} run among {sorted({r.method for r in rows})}")
    return mine[0] if active_fraction is None else min(mine, key=lambda r: abs(r.active_fraction - active_fraction))


def results_table(runs: Sweep | Sequence[RunResult]) -> str:
    """A fixed-width text table: per method and fraction, the test accuracy (mean ± 95% half-width over the
    seeds), the multiplication fractions (counts: the same for every seed) and the median time per step."""
    rows = runs.rows if isinstance(runs, Sweep) else list(runs)
    groups: dict[tuple[str, float], list[RunResult]] = {}
    for r in rows:
        groups.setdefault((r.method, r.active_fraction), []).append(r)
    head = f"{'method':<8} {'active':>7} {'runs':>5} {'test acc':>16} {'layer':>7} {'hashing':>8} {'total':>7} " \
           f"{'ms/step':>8}"
    lines = [head, "-" * len(head)]
    for (method, f), rs in groups.items():
        m, h = _mean_half([r.test_acc for r in rs])
        acc = f"{m:.3f} ± {h:.3f}" if len(rs) > 1 else f"{m:.3f}"
        mf = rs[0].mults
        lines.append(f"{method:<8} {f:>7.0%} {len(rs):>5} {acc:>16} {mf.layer:>7.1%} {mf.hashing:>8.1%} "
                     f"{mf.total:>7.1%} {statistics.median(r.step_ms for r in rs):>8.2f}")
    lines.append("test acc: mean ± 95% half-width over the runs (seeds); layer / hashing / total: multiplications of "
                 "the hidden layer during training, as a fraction of the dense layer's (hashing = queries + table "
                 "rebuilds; for topk: all pre-activations); ms/step: median")
    return "\n".join(lines)


@dataclass
class Overlap:
    """How well a layer's pick matches the exact top-k pre-activations, averaged over examples:
    ``overlap`` = |picked ∩ top-k| / k, ``chance`` = k / n (a random pick's expectation),
    ``activation_captured`` = the picked units' share of the top-k's total positive activation."""

    overlap: float
    chance: float
    activation_captured: float


@torch.no_grad()
def overlap_with_topk(model: nn.Module, x: torch.Tensor) -> Overlap:
    """How many of the units the model's sampled layer picks for ``x`` are among the exact top-k pre-activations."""
    layer = sampled_layer(model)
    if layer is None or layer.selector == "dense":
        raise ValueError("overlap_with_topk needs a model with a sampled (non-dense) hidden layer")
    was = layer.training
    layer.eval()
    try:
        x = x.to(layer.weight.device)
        pre = x @ layer.weight.T + layer.bias
        top = torch.topk(pre, layer.k, dim=1).indices
        picked = layer.select(x)
        hit = torch.zeros_like(pre, dtype=torch.bool).scatter(1, top, True).gather(1, picked)
        act = torch.relu(pre)
        mass_top = act.gather(1, top).sum(1)
        mass_picked = act.gather(1, picked).sum(1)
        captured = (mass_picked / mass_top.clamp_min(1e-12)).mean().item()
    finally:
        layer.train(was)
    return Overlap(hit.float().mean().item(), layer.k / layer.n_out, captured)


@dataclass
class PoolOverlap:
    """:class:`Overlap` of the LSH pick when inputs and weights are pooled to ``pool_dim`` numbers, and what one
    query's hashing costs as a fraction of the dense layer's forward multiplications."""

    pool_dim: int
    overlap: Overlap
    hash_cost: float


def overlap_vs_pool(model: nn.Module, x: torch.Tensor,
                    pool_dims: Sequence[int] = (2, 4, 8, 20, 40)) -> list[PoolOverlap]:
    """Re-hash the model's trained hidden weights with other pooling sizes; the hashing cost per query is
    ``(p + p*K*L) / (n_in * n_out)``."""
    layer = sampled_layer(model)
    if layer is None or layer.selector != "lsh":
        raise ValueError("overlap_vs_pool needs a model whose hidden layer uses selector='lsh'")
    rows = []
    for p in pool_dims:
        if not 1 <= p <= layer.n_in:
            continue
        tmp = SampledHidden(layer.n_in, layer.n_out, selector="lsh", active_fraction=layer.active_fraction,
                            K=layer.K, L=layer.L, pool_dim=p, seed=layer.seed).to(layer.weight.device)
        with torch.no_grad():
            tmp.weight.copy_(layer.weight)
            tmp.bias.copy_(layer.bias)
        hash_cost = (p + p * layer.K * layer.L) / (layer.n_in * layer.n_out)
        rows.append(PoolOverlap(p, overlap_with_topk(tmp, x), hash_cost))
    return rows


def pool_table(models: Sequence[nn.Module], x: torch.Tensor, pool_dims: Sequence[int] = (2, 4, 8, 20, 40)) -> str:
    """:func:`overlap_vs_pool` of every model (one per seed): overlap with the exact top-k, mean ± 95% half-width
    over the models, and the hashing cost per query."""
    per_model = [overlap_vs_pool(m, x, pool_dims) for m in models]
    lines = [f"pool dims   overlap with top-k ({len(models)} models)   hashing cost per query (share of the dense "
             "layer's forward)"]
    for i, row in enumerate(per_model[0]):
        m, h = _mean_half([pm[i].overlap.overlap for pm in per_model])
        lines.append(f"{row.pool_dim:9d}   {m:12.1%} ± {h:5.1%}              {row.hash_cost:7.1%}")
    return "\n".join(lines)


@dataclass
class UnionSizes:
    """Mean size of the union of a batch's active sets, as a fraction of the layer's units, per batch size;
    ``kept`` = k / n, the fraction each example asks for."""

    kept: float
    batch_sizes: tuple[int, ...]
    fractions: tuple[float, ...]

    def at(self, batch_size: int) -> float:
        return self.fractions[self.batch_sizes.index(batch_size)]


@torch.no_grad()
def union_fractions(model: nn.Module, x: torch.Tensor, batch_sizes: Sequence[int] = (1, 8, 32, 128)) -> UnionSizes:
    """Mean fraction of the hidden units in the union of a batch's active sets, per batch size."""
    layer = sampled_layer(model)
    if layer is None:
        raise ValueError("union_fractions needs a model with a sampled hidden layer")
    was = layer.training
    layer.eval()
    try:
        idx = layer.select(x.to(layer.weight.device))
        fractions = tuple(float(np.mean([len(torch.unique(idx[i: i + b])) for i in range(0, len(idx) - b + 1, b)]))
                          / layer.n_out for b in batch_sizes)
    finally:
        layer.train(was)
    return UnionSizes(layer.k / layer.n_out, tuple(int(b) for b in batch_sizes), fractions)


def union_table(unions: dict[str, Sequence[UnionSizes]]) -> str:
    """Batch size against the union's share of the units for each picker (mean ± 95% half-width over its
    models, one per seed)."""
    sizes = next(iter(unions.values()))[0].batch_sizes
    n = len(next(iter(unions.values())))
    lines = ["batch size" + "".join(f"   union of {name} sets ({n} models)" for name in unions)]
    for b in sizes:
        cells = [_mean_half([u.at(b) for u in us]) for us in unions.values()]
        lines.append((f"{b:10d}" + "".join(f"   {m:>17.1%} ± {h:4.1%}      " for m, h in cells)).rstrip())
    return "\n".join(lines)


@dataclass
class StepTimings:
    """Wall time of one training step: the dense layer, LSH per example, LSH on the batch union, timed round-robin
    (round i of each was measured back to back, so ratios are taken round by round)."""

    dense: Timing
    per_example: Timing
    union: Timing

    def rows(self) -> list[tuple[str, Timing]]:
        return [("dense", self.dense), ("lsh per-example", self.per_example), ("lsh batch union", self.union)]

    def ratio(self, which: str = "per_example") -> Spread:
        """Step time of ``which`` ("per_example" or "union") over the dense step, per round: median and range."""
        t = getattr(self, which)
        return median_range([a / b for a, b in zip(t.times, self.dense.times)])


def step_timings(*, width: int = 1000, n_in: int = 40, batch_size: int = 64, active_fraction: float = 0.05,
                 device: str = "cpu", rounds: int = 15, seed: int | None = None, K: int = DEFAULTS.K,
                 L: int = DEFAULTS.L, pool_dim: int = DEFAULTS.pool_dim) -> StepTimings:
    """Wall time of one training step (forward, backward, Adam step) of ``n_in -> width -> 10``:
    the dense layer vs LSH per-example vs LSH batch union, same random batch, interleaved over ``rounds``
    (:func:`lessons_lib.timing.time_interleaved`; device synchronized)."""
    dev = pick_device(device)
    width, n_in = _size(width, "width"), _size(n_in, "n_in")
    batch_size, rounds = _size(batch_size, "batch_size", 10**6), _size(rounds, "rounds", 10_000, "e.g. 15")
    seed = get_seed() if seed is None else check_seed(seed)
    g = torch_generator(seed, stream=93)
    x = torch.randn(batch_size, n_in, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    steps = {}
    for name, sel, mode in (("dense", "dense", "per_example"), ("per_example", "lsh", "per_example"),
                            ("union", "lsh", "union")):
        model = hashed_mlp(n_in, width, 10, selector=sel, active_fraction=active_fraction, mode=mode, K=K, L=L,
                           pool_dim=min(pool_dim, n_in), seed=seed).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
    t = time_interleaved(steps, device=dev, rounds=rounds, warmup=3)
    return StepTimings(t["dense"], t["per_example"], t["union"])


# --- claims ----------------------------------------------------------------------------------------------
def claims(sweep: Sweep, overlaps: Sequence[Overlap], timings: StepTimings, *, scratch: Sequence[ScratchRun] = (),
           unions: tuple[Sequence[UnionSizes], Sequence[UnionSizes]] | None = None, fraction: float = 0.05,
           union_batch: int = 32) -> Claims:
    """The lesson's claims, each measured over this run's seeds: the sweep (accuracy gaps paired by seed), the LSH
    models' ``overlaps`` with the exact top-k, the ``timings`` (ratios round by round), the from-scratch runs, and
    ``unions`` = (LSH models' union sizes, random models' union sizes). Verdicts: :func:`lessons_lib.stats.verdict`."""
    c = Claims("09 randomized hashing")
    src = "seed 003 (Spring & Shrivastava)"
    lsh_runs = sweep.runs("lsh", fraction)
    f = lsh_runs[0].active_fraction
    n = len(lsh_runs)
    totals = median_range([r.mults.total for r in lsh_runs])
    m = lsh_runs[0].mults
    same = "a count: the same in all" if totals.low == totals.high else f"median {totals.median:.1%}, range " \
        f"{totals.low:.1%}–{totals.high:.1%} over"
    c.add("LSH needs ~5% of the multiplications (criterion: ≤ 10% with hashing and rebuilds counted)", src,
          f"at {f:.0%} active: layer {m.layer:.1%} + hashing {m.selection:.1%} + rebuilds {m.rebuild:.1%} = "
          f"{m.total:.1%} of dense ({same} {n} runs)", verdict(totals, 0.10, "below"))
    lsh_acc, dense_acc = sweep.test_acc("lsh", f), sweep.test_acc("dense")
    gap = sweep.paired_gap(("dense", None), ("lsh", f))
    c.add("…without any loss in accuracy (criterion: within 1 point of dense test accuracy)", src,
          f"dense − LSH: {_points(gap)}; test accuracy LSH {lsh_acc.mean:.3f}, "
          f"dense {dense_acc.mean:.3f}", verdict(gap, 0.01, "below"))
    if "random" in sweep.methods():
        d = sweep.paired_gap(("lsh", f), ("random", f))
        c.add("LSH picks better units than a random subset of the same size (test accuracy)", "lesson",
              f"LSH − random at {f:.0%} active: {_points(d)}",
              verdict(d, 0.0, "above"))
    if "topk" in sweep.methods():
        d = sweep.paired_gap(("topk", f), ("lsh", f))
        oracle = sweep.paired_gap(("dense", None), ("topk", f))
        c.add("Control: at the same fraction the exact top-k units (an oracle: it computes every pre-activation to "
              "choose) beat LSH, so the accuracy lost is LSH's pick, not the budget of units", "lesson",
              f"top-k − LSH at {f:.0%} active: {_points(d)}; dense − top-k: {_points(oracle)}",
              verdict(d, 0.0, "above"))
    iv, chance = mean_interval([o.overlap for o in overlaps]), overlaps[0].chance
    c.add("Hashing finds the units with the highest activations (criterion: overlap ≥ 2 × chance)", src,
          f"{iv.format('.1f', 100, '%')} of the picked units are in the exact top-k (chance {chance:.1%})",
          verdict(iv, 2 * chance, "above"))
    if len(scratch) >= 2:
        iv, chance = mean_interval([s.overlap for s in scratch]), scratch[0].chance
        acc = mean_interval([s.val_acc[-1] for s in scratch])
        c.add("…and so does the from-scratch version of Part 1 (same criterion)", "lesson",
              f"{iv.format('.1f', 100, '%')} of the picked units are in the exact top-k (chance {chance:.1%}), "
              f"val accuracy {acc.mean:.3f}; picked with {scratch[0].code}", verdict(iv, 2 * chance, "above"))
    if unions is not None:
        lsh_u, rnd_u = unions
        d = paired_interval([u.at(union_batch) for u in rnd_u], [u.at(union_batch) for u in lsh_u])
        c.add(f"Similar inputs share buckets: a batch's union of LSH sets is smaller than that of random sets "
              f"(batch of {union_batch})", "lesson",
              f"random − LSH: {_points(d)} of the layer's units; LSH union "
              f"{statistics.fmean(u.at(union_batch) for u in lsh_u):.1%}", verdict(d, 0.0, "above"))
    per, uni = timings.ratio("per_example"), timings.ratio("union")
    c.add("Fewer multiplications make training faster (wall time per step, LSH per example vs dense)",
          "seed 003 (implied)",
          f"LSH per-example step {per.format('.1f', unit='×')} the dense step; batch union "
          f"{uni.format('.1f', unit='×')} (ratios per interleaved round)", verdict(per, 1.0, "below"))
    c.add("Sparse updates suit asynchronous (HOGWILD) training with near-linear speedup", src,
          "not measured in this lesson (one process): see lesson 10", None)
    return c


# --- panel -----------------------------------------------------------------------------------------------
def make_panel():
    """The live panel: method, active fraction, epochs, width (the size knob for a GPU)."""
    import ipywidgets as w

    from ..panel import LivePanel

    knobs = {
        "method": w.Dropdown(options=list(SELECTORS), value="lsh", description="method"),
        "active_fraction": w.SelectionSlider(options=[0.02, 0.05, 0.1, 0.25, 0.5], value=0.05,
                                             description="active frac."),
        "epochs": w.IntSlider(value=4, min=1, max=60, description="epochs"),
        "width": w.Dropdown(options=[250, 1000, 4000], value=1000, description="width"),
    }
    return LivePanel(experiment, knobs, title="Which hidden units to compute?")
