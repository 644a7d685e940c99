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
from ..lsh import LshIndex, RebuildSchedule, check_active_fraction, topk_by_counts, units_kept
from ..numpy_layers import (
    linear_backward,
    linear_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from ..seeds import get_seed, numpy_rng, seed_everything, torch_generator
from ..timing import Timing, time_it
from ..training import History, evaluate, fit
from . import reference
from .reference import LookupFn, SimHashFn

SELECTORS = ("lsh", "random", "topk", "dense", "dropout")
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
    rng = numpy_rng(seed, stream=91)
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
    if picker not in ("lsh", "random"):
        raise ValueError(f"picker must be 'lsh' or 'random', got {picker!r}")
    rng = numpy_rng(seed, stream=94)
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
        if selector not in ("lsh", "random", "topk", "dense"):
            raise ValueError(f"selector must be one of lsh, random, topk, dense; got {selector!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if n_in < 1 or n_out < 1:
            raise ValueError(f"layer sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
        self.n_in, self.n_out, self.selector, self.mode = n_in, n_out, selector, mode
        self.active_fraction = 1.0 if selector == "dense" else check_active_fraction(active_fraction)
        self.k = units_kept(n_out, self.active_fraction)
        lin = nn.Linear(n_in, n_out)  # PyTorch's default initialisation
        self.weight, self.bias = nn.Parameter(lin.weight.detach().clone()), nn.Parameter(lin.bias.detach().clone())
        self.seed = get_seed() if seed is None else int(seed)
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
    """The lesson's default run: MNIST-1D, 40 -> 1000 (sampled) -> 10, Adam, K = 6 bits, L = 50 tables."""

    dataset: str = "mnist1d"
    width: int = 1000
    epochs: int = 3
    lr: float = 5e-3
    batch_size: int = 128
    K: int = 6
    L: int = 50
    pool_dim: int = 8


DEFAULTS = Defaults()


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
    if method not in SELECTORS:
        raise ValueError(f"method must be one of {', '.join(SELECTORS)}, got {method!r}")
    seed = seed_everything(seed)
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
    h = experiment(method=method, active_fraction=active_fraction, device=device, seed=seed, data=data, **kw)
    model = h.config["model"]
    dev = next(model.parameters()).device
    _, test_acc = evaluate(model, data.x_test.to(dev), data.y_test.to(dev))
    layer = sampled_layer(model)
    # dropout: the dense layer is computed in full, then masked
    mults = layer.counters.train.fractions() if layer is not None else MultFractions(1.0, 0.0, 0.0)
    return RunResult(method, active_fraction, h.val_acc[-1], test_acc, h.total_seconds, h.summary()["step_ms"], mults,
                     h, model)


def fraction_sweep(fractions: Sequence[float] = (0.02, 0.05, 0.1, 0.25), methods: Sequence[str] = ("lsh", "random"),
                   *, data: Splits | None = None, device: str = "cpu", seed: int | None = None,
                   include_dense: bool = True, **kw) -> list[RunResult]:
    """Every method at every fraction (plus one dense run): the accuracy-vs-work table of the lesson."""
    for f in fractions:
        check_active_fraction(f)
    seed = get_seed() if seed is None else seed
    data = data if data is not None else load(kw.pop("dataset", DEFAULTS.dataset), seed=seed)
    rows = [run_one("dense", 1.0, data=data, device=device, seed=seed, **kw)] if include_dense else []
    for m in methods:
        for f in fractions:
            rows.append(run_one(m, f, data=data, device=device, seed=seed, **kw))
    return rows


def find_run(rows: Sequence[RunResult], method: str, active_fraction: float | None = None) -> RunResult:
    """The run of ``method`` at ``active_fraction`` (the closest one; any fraction if None)."""
    mine = [r for r in rows if r.method == method]
    if not mine:
        raise ValueError(f"no {method!r} run among {sorted({r.method for r in rows})}")
    return mine[0] if active_fraction is None else min(mine, key=lambda r: abs(r.active_fraction - active_fraction))


def results_table(rows: Sequence[RunResult]) -> str:
    """A fixed-width text table of a sweep."""
    head = f"{'method':<8} {'active':>7} {'val acc':>8} {'test acc':>9} {'layer':>7} {'hashing':>8} {'total':>7} " \
           f"{'ms/step':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r.mults
        lines.append(f"{r.method:<8} {r.active_fraction:>7.0%} {r.val_acc:>8.3f} {r.test_acc:>9.3f} "
                     f"{m.layer:>7.1%} {m.hashing:>8.1%} {m.total:>7.1%} {r.step_ms:>8.2f}")
    lines.append("layer / hashing / total: multiplications of the hidden layer during training, as a fraction of the "
                 "dense layer's (hashing = queries + table rebuilds; for topk: all pre-activations)")
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


@dataclass
class StepTimings:
    """Wall time of one training step: the dense layer, LSH per example, LSH on the batch union."""

    dense: Timing
    per_example: Timing
    union: Timing

    def rows(self) -> list[tuple[str, Timing]]:
        return [("dense", self.dense), ("lsh per-example", self.per_example), ("lsh batch union", self.union)]


def step_timings(*, width: int = 1000, n_in: int = 40, batch_size: int = 64, active_fraction: float = 0.05,
                 device: str = "cpu", repeats: int = 15, seed: int | None = None, K: int = DEFAULTS.K,
                 L: int = DEFAULTS.L, pool_dim: int = DEFAULTS.pool_dim) -> StepTimings:
    """Wall time of one training step (forward, backward, Adam step) of ``n_in -> width -> 10``:
    the dense layer vs LSH per-example vs LSH batch union, same random batch. Device synchronized."""
    dev = pick_device(device)
    seed = get_seed() if seed is None else seed
    g = torch_generator(seed, stream=93)
    x = torch.randn(batch_size, n_in, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    out = []
    for sel, mode in (("dense", "per_example"), ("lsh", "per_example"), ("lsh", "union")):
        model = hashed_mlp(n_in, width, 10, selector=sel, active_fraction=active_fraction, mode=mode, K=K, L=L,
                           pool_dim=min(pool_dim, n_in), seed=seed).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out.append(time_it(step, device=dev, warmup=3, repeats=repeats))
    return StepTimings(*out)


# --- claims ----------------------------------------------------------------------------------------------
def claims(rows: Sequence[RunResult], overlap: Overlap, timings: StepTimings, scratch: ScratchRun | None = None,
           fraction: float = 0.05) -> Claims:
    """The lesson's claims, each measured from this run's sweep, overlap, timings (and from-scratch run)."""
    c = Claims("09 randomized hashing")
    src = "seed 003 (Spring & Shrivastava)"
    dense = find_run(rows, "dense")
    lsh = find_run(rows, "lsh", fraction)
    rnd = [r for r in rows if r.method == "random" and r.active_fraction == lsh.active_fraction]
    m = lsh.mults
    c.add("LSH needs ~5% of the multiplications (criterion here: ≤ 10% with hashing and rebuilds counted)", src,
          f"at {lsh.active_fraction:.0%} active: layer {m.layer:.1%} + hashing {m.selection:.1%} + rebuilds "
          f"{m.rebuild:.1%} = {m.total:.1%} of dense", m.total <= 0.10)
    gap = dense.test_acc - lsh.test_acc
    c.add("…without any loss in accuracy (criterion: within 1 point of dense)", src,
          f"test accuracy LSH {lsh.test_acc:.3f} vs dense {dense.test_acc:.3f} "
          f"({abs(100 * gap):.1f} points {'lost' if gap > 0 else 'gained'})",
          gap <= 0.01)
    if rnd:
        c.add("LSH picks better units than a random subset of the same size", "the lesson",
              f"test accuracy LSH {lsh.test_acc:.3f} vs random {rnd[0].test_acc:.3f}",
              lsh.test_acc > rnd[0].test_acc)
    c.add("Hashing finds the units with the highest activations (criterion: overlap ≥ 2 × chance)", src,
          f"{overlap.overlap:.1%} of the picked units are in the exact top-k (chance {overlap.chance:.1%})",
          overlap.overlap >= 2 * overlap.chance)
    if scratch is not None:
        c.add("…and so does the from-scratch version of Part 1 (same criterion)", "the lesson",
              f"{scratch.overlap:.1%} of the picked units are in the exact top-k (chance {scratch.chance:.1%}), "
              f"val accuracy {scratch.val_acc[-1]:.3f}; picked with {scratch.code}",
              scratch.overlap >= 2 * scratch.chance)
    td, tl = timings.dense.median, timings.per_example.median
    c.add("Fewer multiplications make training faster (wall time per step)", "implied by seed 003",
          f"LSH per-example step {1e3 * tl:.2f} ms vs dense {1e3 * td:.2f} ms ({tl / td:.1f}× dense)", tl < td)
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
