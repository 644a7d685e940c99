"""Lesson 04, the binomial bottleneck: a pure-numpy MLP with dropout, profiled, and compared to torch.

Seed 000: a cProfile of a numpy training loop where ``RandomState.binomial`` (the dropout masks) took 5,912 s of
8,431 s, about 70%. This module rebuilds that loop (``40 -> 1024 -> 10`` from the core numpy layers, dropout on
the 1024 hidden units, batches of 128: one 128x1024 mask per step, drawn by a mask function passed in), profiles
it, times the mask generators of :mod:`lessons_lib.binomial_bottleneck.reference` (and the learner's), states how
exact each is, measures PyTorch's own CPU dropout against ``FastDropout`` and a PyTorch epoch with dropout on and
off (on the CPU, and against a GPU when there is one). The fix itself, measured over seeds against Amdahl's bound:
:mod:`lessons_lib.binomial_bottleneck.fix`. Figures: :mod:`lessons_lib.binomial_bottleneck.plots`.

CPU timings are CPU time of the process (``time.process_time``), in interleaved rounds: on a quiet machine that is
the wall time, and on a busy shared one the time spent waiting for another process is not counted, so ratios stay
honest. Ratios are taken round by round (paired) and reported with their 95% interval over the rounds.
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from .. import numpy_layers as nl
from ..claims import Claims
from ..data import Splits
from ..data import load as load_data
from ..device import pick_device
from ..models import mlp
from ..seeds import get_seed, numpy_rng, seed_everything
from ..stats import Interval, all_of, mean_interval, verdict
from ..timing import cpu_rounds, min_ratios, time_interleaved
from ..training import History, batches, fit, make_optimizer, train_loop
from ..validate import BadArgument, check_choice, check_int, check_p, check_shape
from . import reference
from .fast_dropout import FastDropout

if TYPE_CHECKING:
    from .fix import FixRuns
    from .speed import FastVsTorch

HIDDEN = 1024
BATCH = 128
BLAS_THREADS = 1  # numpy's BLAS pinned to one thread: stable profiles on a shared 2-core machine
MASK_NAMES = ("binomial_mask", "dropout_mask", "uint8_mask", "bits_mask")  # the mask functions' profile rows
Mask = Callable[[tuple, float, np.random.Generator], np.ndarray]  # mask(shape, p, rng) -> bool, True = keep


def blas_threads(n: int | None = BLAS_THREADS):
    """Context manager limiting numpy's BLAS (and OpenMP) thread pools to ``n`` (None: no limit)."""
    return threadpool_limits(n)


def dropout_mask(uint8_mask=reference.uint8_mask, bits_mask=reference.bits_mask) -> Mask:
    """A mask(shape, p, rng) made of the two fast generators: packed bits at p = 0.5, the byte threshold else."""
    def dropout_mask(shape: tuple, p: float, rng: np.random.Generator) -> np.ndarray:
        return bits_mask(shape, rng) if p == 0.5 else uint8_mask(shape, p, rng)
    return dropout_mask


class NumpyMLP:
    """``n_in -> hidden -> n_out``, ReLU, inverted dropout ``p`` on the hidden layer, SGD + momentum, float32.

    ``mask(shape, p, rng)`` draws the keep mask of each step from a PCG64 Generator (``rng``); the default is seed
    000's ``RandomState.binomial`` (:func:`reference.binomial_mask`). The net applies the mask itself.
    """

    def __init__(self, n_in: int = 40, hidden: int = HIDDEN, n_out: int = 10, p: float = 0.5,
                 mask: Mask = reference.binomial_mask, seed: int | None = None, lr: float = 0.05,
                 momentum: float = 0.9):
        seed = get_seed() if seed is None else seed
        init = numpy_rng(seed, stream=40)
        self.params = [
            (init.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(np.float32),
            np.zeros(hidden, np.float32),
            (init.standard_normal((hidden, n_out)) * np.sqrt(1.0 / hidden)).astype(np.float32),
            np.zeros(n_out, np.float32),
        ]
        self.velocity = [np.zeros_like(w) for w in self.params]
        self.p, self.lr, self.momentum, self.mask = p, lr, momentum, mask
        self.rng = numpy_rng(seed, stream=41)
        self.shuffle_rng = numpy_rng(seed, stream=42)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        w1, b1, w2, b2 = self.params
        a, c1 = nl.linear_forward(x, w1, b1)
        h, c2 = nl.relu_forward(a)
        scaled_keep = self.mask(h.shape, self.p, self.rng) * np.float32(1.0 / (1.0 - self.p))  # inverted dropout
        logits, c4 = nl.linear_forward(h * scaled_keep, w2, b2)
        loss, c5 = nl.softmax_cross_entropy_forward(logits, y)
        dh, dw2, db2 = nl.linear_backward(nl.softmax_cross_entropy_backward(c5), c4)
        _, dw1, db1 = nl.linear_backward(nl.relu_backward(dh * scaled_keep, c2), c1, need_dx=False)
        for w, v, g in zip(self.params, self.velocity, (dw1, db1, dw2, db2)):
            v *= self.momentum
            v -= self.lr * g
            w += v
        return loss

    def train_epoch(self, x: np.ndarray, y: np.ndarray, batch_size: int = BATCH) -> float:
        """One pass over (x, y) in shuffled batches; returns the mean training loss."""
        order = self.shuffle_rng.permutation(len(x))
        losses = []
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            losses.append(self.train_step(x[batch], y[batch]))
        return float(np.mean(losses))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Eval mode: no dropout (inverted dropout needs no rescaling)."""
        w1, b1, w2, b2 = self.params
        return float(((np.maximum(x @ w1 + b1, 0) @ w2 + b2).argmax(1) == y).mean())


def numpy_data(splits: Splits | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mnist1d as float32/int64 numpy arrays (x_train, y_train, x_val, y_val)."""
    s = splits if splits is not None else load_data("mnist1d")
    return s.x_train.numpy(), s.y_train.numpy(), s.x_val.numpy(), s.y_val.numpy()


@dataclass
class Profile:
    """A cProfile run of ``epochs`` numpy epochs: the stats, the top of the table, val accuracy afterwards, and
    each epoch's own stats (one profiler per epoch: the first epoch of a fresh process runs cold)."""

    mask: str  # the mask function's name
    epochs: int
    stats: pstats.Stats
    table: str
    val_acc: float
    epoch_stats: list[pstats.Stats] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return self.stats.total_tt


def profile_training(mask: Mask = reference.binomial_mask, epochs: int = 3, splits: Splits | None = None,
                     seed: int | None = None, top: int = 10) -> Profile:
    """Train :class:`NumpyMLP` with ``mask`` for ``epochs`` under cProfile (a profiler per epoch); the table's top
    ``top`` rows by tottime over all epochs."""
    x, y, xv, yv = numpy_data(splits)
    net = NumpyMLP(n_in=x.shape[1], mask=mask, seed=seed)
    profs = []
    with blas_threads():
        for _ in range(epochs):
            prof = cProfile.Profile()
            prof.enable()
            net.train_epoch(x, y)
            prof.disable()
            profs.append(prof)
        val_acc = net.accuracy(xv, yv)
    buf = io.StringIO()
    stats = pstats.Stats(*profs, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    table = buf.getvalue()
    table = table[table.index("   ncalls"):] if "   ncalls" in table else table
    return Profile(getattr(mask, "__name__", "mask"), epochs, stats, table.rstrip(), val_acc,
                   [pstats.Stats(p) for p in profs])


def train_numpy(mask: Mask, epochs: int = 10, splits: Splits | None = None, seed: int | None = None) -> list[float]:
    """Val accuracy after each of ``epochs`` epochs."""
    x, y, xv, yv = numpy_data(splits)
    net = NumpyMLP(n_in=x.shape[1], mask=mask, seed=seed)
    accs = []
    with blas_threads():
        for _ in range(epochs):
            net.train_epoch(x, y)
            accs.append(net.accuracy(xv, yv))
    return accs


# --------------------------------------------------------------------------------------------------
# Timing: CPU time in interleaved rounds, ratios per round
# --------------------------------------------------------------------------------------------------
def interval_or_value(values: Sequence[float]) -> Interval:
    """95% interval over the values (a single value: a zero-width interval, n = 1)."""
    if len(values) >= 2:
        return mean_interval(values)
    v = float(values[0])
    return Interval(v, v, v, 1)


def pm(i: Interval, fmt: str = ".2f", unit: str = "") -> str:
    """``mean ± half-width`` of an interval, without its run count (for table cells)."""
    return f"{i.mean:{fmt}}{unit} ± {i.half_width:{fmt}}"


# --------------------------------------------------------------------------------------------------
# The mask generators: how exact, how fast
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskMethod:
    """What a method does and how exact it is: ``resolution`` bounds |keep probability - (1 - p)|."""

    name: str
    description: str
    resolution: float  # 0.0 = exact (float64)
    only_p: float | None = None


MASK_METHODS = {m.name: m for m in (
    MaskMethod("binomial", "RandomState.binomial(1, 1-p, size): seed 000's call", 0.0),
    MaskMethod("uniform", "float32 uniform u per unit, keep if u >= p", 2.0**-24),
    MaskMethod("uint16", "16-bit random word w per unit, keep if w >= round(65536 p)", 2.0**-17),
    MaskMethod("uint8", "random byte b per unit, keep if b >= round(256 p): p in 1/256 steps", 2.0**-9),
    MaskMethod("exact", "byte threshold, ties at the threshold byte refined by more bytes", 0.0),
    MaskMethod("table", "16 random bits per 8 units: a 65,536-entry table of keep patterns", 2.0**-17),
    MaskMethod("bits", "one random bit per unit (bytes unpacked); p = 0.5 only", 0.0, only_p=0.5),
)}
AUTO_TOLERANCE = 2.0**-16


def keep_probability(method: str, p: float) -> float:
    """The exact probability that ``method`` keeps a unit at drop probability ``p`` (its quantization)."""
    if method == "auto":
        method = reference.auto_method(p)
    if p == 0.0 or method in ("binomial", "exact"):
        return 1.0 - p
    if method == "bits":
        if p != 0.5:
            raise ValueError("'bits' exists only at p = 0.5")
        return 0.5
    if method in ("uint8", "uint16"):
        levels = 256 if method == "uint8" else 65536
        return (levels - min(round(levels * p), levels)) / levels
    if method == "table":  # every unit's share of the table's 65,536 entries (the same for all 8 units)
        return float(np.unpackbits(reference.pattern_table(p)).sum()) / (8 * 65536)
    if method == "uniform":  # u = k 2^-24, k uniform in 0..2^24-1, compared in float32 with float32(p)
        return 1.0 - math.ceil(float(np.float32(p)) * 2**24) / 2**24
    raise ValueError(f"unknown mask method {method!r}: choose 'auto' or one of {', '.join(MASK_METHODS)}")


def method_table(ps: tuple[float, ...] = (0.1, 0.25, 0.5, 0.8)) -> str:
    """Each method's exactness, and its keep probability at each p (they should all read 1 - p)."""
    lines = [f"{'method':<9} {'exactness':<15} " + " ".join(f"{f'p={p:g}':>9}" for p in ps)]
    for m in [*MASK_METHODS.values(), MaskMethod("auto", "fastest within 2^-16", AUTO_TOLERANCE)]:
        res = "exact" if m.resolution == 0 else f"within {m.resolution:.1e}"
        cells = [f"{keep_probability(m.name, p):>9.6f}" if m.only_p in (None, p) else f"{'—':>9}" for p in ps]
        lines.append(f"{m.name:<9} {res:<15} " + " ".join(cells))
    return "\n".join(lines) + "\nauto picks: " + ", ".join(f"p={p:g}: {reference.auto_method(p)}" for p in ps)


@dataclass
class GeneratorRow:
    method: str
    seconds: float  # median CPU seconds per mask
    speedup: float  # binomial seconds / this (medians)
    keep_prob: float | None
    ratios: list[float] = field(default_factory=list)  # binomial / this, per group of rounds
    times: list[float] = field(default_factory=list)  # CPU seconds per mask, per round


def compare_generators(shape: tuple[int, int] = (BATCH, HIDDEN), p: float = 0.5, repeats: int = 10,
                       seed: int | None = None, include_torch: bool = True, uint8_mask: Mask = reference.uint8_mask,
                       bits_mask=reference.bits_mask) -> list[GeneratorRow]:
    """CPU time of each mask method at ``shape`` and ``p`` (the "uint8" and "bits" rows time the functions passed
    in: the learner's once they pass their checks), plus two floors: only the random bytes a p = 0.5 mask needs,
    and writing a bool array of that size. ``repeats`` groups of 3 interleaved rounds, one speed ratio each."""
    g = numpy_rng(seed, stream=43)
    n = math.prod(shape)
    fns: dict[str, Callable[[], object]] = {m: (lambda m=m: reference.MASKS[m](shape, p, g))
                                            for m in reference.MASKS if m != "bits" or p == 0.5}
    fns["uint8"] = lambda: uint8_mask(shape, p, g)
    if p == 0.5:
        fns["bits"] = lambda: bits_mask(shape, g)
    fns["auto"] = lambda: reference.bernoulli_mask(shape, p, "auto", g)
    if include_torch:
        fns["torch (CPU)"] = lambda: torch.rand(shape) >= p
    fns["floor: random bits"] = lambda: reference.random_bytes(g, (n + 7) // 8)
    fns["floor: memory"] = lambda: np.ones(shape, dtype=bool)
    times = cpu_rounds(fns, 3 * repeats)
    base = float(np.median(times["binomial"]))
    rows = []
    for k, t in times.items():
        kp = None if k.startswith("floor") else keep_probability("uniform" if k.startswith("torch") else k, p)
        rows.append(GeneratorRow(k, float(np.median(t)), base / float(np.median(t)), kp,
                                 min_ratios(times["binomial"], t), list(t)))
    return rows


def generators_table(rows: list[GeneratorRow]) -> str:
    n = len(rows[0].ratios)
    lines = [f"{'method':<20} {'CPU time':>10} {'vs binomial':>20} {'keep prob':>10}"]
    for r in rows:
        kp = "" if r.keep_prob is None else f"{r.keep_prob:.6f}"
        vs = "1x" if r.method == "binomial" else pm(interval_or_value(r.ratios), ".1f", "x")
        lines.append(f"{r.method:<20} {r.seconds * 1e6:>8.1f}µs {vs:>20} {kp:>10}")
    return "\n".join(lines) + f"\n(median CPU time; speed ratio: mean ± 95% interval over {n} groups of 3 rounds)"


# --------------------------------------------------------------------------------------------------
# torch: FastDropout against nn.Dropout, and PyTorch's own CPU dropout
# --------------------------------------------------------------------------------------------------
@dataclass
class LayerStats:
    """Output statistics of a dropout layer on a tensor of ones."""

    name: str
    mean: float
    var: float
    dropped: float


def fast_dropout_vs_nn_dropout(p: float = 0.5, shape: tuple[int, int] = (512, 1024),
                               seed: int | None = None) -> tuple[list[LayerStats], bool]:
    """FastDropout and nn.Dropout on ``ones(shape)`` against theory (mean 1, variance p/(1-p), dropped p); and
    ``torch.autograd.gradcheck`` of FastDropout in float64 (the mask held fixed by re-seeding torch)."""
    seed_everything(seed)
    rows = [LayerStats("theory", 1.0, p / (1 - p), p)]
    for name, layer in (("FastDropout", FastDropout(p)), ("nn.Dropout", nn.Dropout(p))):
        y = layer.train()(torch.ones(*shape))
        rows.append(LayerStats(name, y.mean().item(), y.var().item(), (y == 0).float().mean().item()))
    layer = FastDropout(p).train()

    def fixed_mask(t: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(123)
        return layer(t)

    xg = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    return rows, bool(torch.autograd.gradcheck(fixed_mask, (xg,)))


def layer_stats_table(rows: list[LayerStats]) -> str:
    lines = [f"{'':<12} {'mean':>8} {'variance':>9} {'dropped':>8}"]
    lines += [f"{r.name:<12} {r.mean:>8.4f} {r.var:>9.4f} {r.dropped:>8.4f}" for r in rows]
    return "\n".join(lines)


@dataclass
class DropoutCost:
    """Median seconds on one device for one activation: a copy (``clone``), one uniform float per element
    (``torch.rand``), the Bernoulli mask alone as the CPU kernel draws it (``bernoulli_``), ``F.dropout``
    forward, and forward + backward of ``F.dropout`` and of ``FastDropout``; ``rounds``: the per-round times."""

    clone: float
    rand: float
    bernoulli: float
    dropout_fwd: float
    dropout_fwd_bwd: float
    fast_fwd_bwd: float
    rounds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def clones(self) -> float:
        """F.dropout forward, in clones (medians)."""
        return self.dropout_fwd / self.clone

    @property
    def mask_share(self) -> float:
        """Share of F.dropout's forward that drawing its mask alone takes (medians)."""
        return self.bernoulli / self.dropout_fwd

    @property
    def fast_speedup(self) -> float:
        return self.dropout_fwd_bwd / self.fast_fwd_bwd

    def ratios(self, a: str, b: str) -> list[float]:
        """Per group of rounds: ``a``'s time over ``b``'s (keys: clone, rand, bernoulli, fwd, fwd_bwd, fast)."""
        return min_ratios(self.rounds[a], self.rounds[b]) if self.rounds else [getattr(self, _FIELD[a]) /
                                                                             getattr(self, _FIELD[b])]

    def lines(self) -> str:
        rows = (("clone", self.clone), ("torch.rand", self.rand), ("bernoulli_ mask", self.bernoulli),
                ("F.dropout fwd", self.dropout_fwd), ("F.dropout fwd+bwd", self.dropout_fwd_bwd),
                ("FastDropout fwd+bwd", self.fast_fwd_bwd))
        return "\n".join(f"  {k:<20} {v * 1e6:9.0f} µs  ({v / self.clone:6.1f}x a clone)" for k, v in rows)


_FIELD = {"clone": "clone", "rand": "rand", "bernoulli": "bernoulli", "fwd": "dropout_fwd",
          "fwd_bwd": "dropout_fwd_bwd", "fast": "fast_fwd_bwd"}


def dropout_layer_cost(shape: tuple[int, int] = (BATCH, HIDDEN), p: float = 0.5, device: str = "cpu",
                       repeats: int = 10) -> DropoutCost:
    """Time PyTorch's dropout against a copy, its random numbers, and FastDropout: ``repeats`` groups of 3
    interleaved rounds; CPU time on the CPU, synchronized wall time on a GPU."""
    dev, p = pick_device(device), check_p(p)
    shape, repeats = check_shape(shape), check_int(repeats, "repeats", low=1)
    x = torch.randn(*shape, device=dev)
    xg = x.clone().requires_grad_(True)
    g = torch.ones(*shape, device=dev)
    fast = FastDropout(p).train()

    def fwd_bwd(fn):
        def step():
            fn(xg).backward(g)
            xg.grad = None
        return step

    fns = {
        "clone": x.clone,
        "rand": lambda: torch.rand(*shape, device=dev),
        "bernoulli": lambda: torch.empty_like(x).bernoulli_(1.0 - p),
        "fwd": lambda: F.dropout(x, p, training=True),
        "fwd_bwd": fwd_bwd(lambda t: F.dropout(t, p, training=True)),
        "fast": fwd_bwd(fast),
    }
    if dev.type == "cpu":
        t = cpu_rounds(fns, 3 * repeats)
    else:
        t = {k: v.times for k, v in time_interleaved(fns, rounds=3 * repeats, warmup=3, device=dev).items()}
    med = {k: float(np.median(v)) for k, v in t.items()}
    return DropoutCost(med["clone"], med["rand"], med["bernoulli"], med["fwd"], med["fwd_bwd"], med["fast"], t)


# --------------------------------------------------------------------------------------------------
# A PyTorch epoch with dropout on and off; CPU against GPU (seed 000's comparison)
# --------------------------------------------------------------------------------------------------
@dataclass
class TorchEpochs:
    """Seconds of one training epoch of the lesson's net in PyTorch per configuration (name -> (device, p,
    dropout layer)), in interleaved rounds after one warm-up epoch each. ``clock``: "CPU time" (all on the CPU) or
    "wall time" (a GPU takes part: synchronized wall time)."""

    configs: dict[str, tuple[str, float, str]]
    seconds: dict[str, list[float]]
    clock: str

    def ratios(self, a: str, b: str) -> list[float]:
        """Per round: ``a``'s epoch time over ``b``'s."""
        return [x / y for x, y in zip(self.seconds[a], self.seconds[b])]

    def table(self) -> str:
        lines = [f"{'configuration':<22} {'device':>6} {'p':>4} {'dropout':>12} {'s/epoch':>9}   ({self.clock}, "
                 f"median of {len(next(iter(self.seconds.values())))} rounds)"]
        for name, (dev, p, impl) in self.configs.items():
            lines.append(f"{name:<22} {dev:>6} {p:>4g} {impl if p else '—':>12} "
                         f"{float(np.median(self.seconds[name])):>9.4f}")
        return "\n".join(lines)


LAYERS = {"nn.Dropout": nn.Dropout, "FastDropout": FastDropout}


def torch_epochs(configs: dict[str, tuple[str, float, str]], rounds: int = 5, splits: Splits | None = None,
                 hidden: int = HIDDEN, seed: int | None = None) -> TorchEpochs:
    """Train the lesson's net (40 -> ``hidden`` -> 10, Adam) once per configuration, one epoch per round,
    round-robin, through the course's training loop; the first epoch of each is a warm-up (not counted)."""
    if not isinstance(configs, dict) or not configs:
        raise BadArgument("configs must be a non-empty dict: name -> (device, p, 'nn.Dropout' or 'FastDropout')")
    configs = {name: (str(pick_device(dev)), check_p(p, f"configs[{name!r}] p"),
                      check_choice(impl, f"configs[{name!r}] dropout", LAYERS))
               for name, (dev, p, impl) in configs.items()}
    rounds, hidden = check_int(rounds, "rounds", low=1), check_int(hidden, "hidden", low=1)
    splits = splits if splits is not None else load_data("mnist1d")
    seed = get_seed() if seed is None else seed
    wall = any(dev != "cpu" for dev, _, _ in configs.values())
    runs = {}
    for name, (dev, p, impl) in configs.items():
        torch.manual_seed(seed)
        model = mlp(splits.n_features, [hidden], splits.n_classes, dropout=p, dropout_layer=LAYERS[impl]).to(dev)
        d = splits.to(dev)
        loader = batches(d.x_train, d.y_train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))
        runs[name] = (model, make_optimizer("adam", model.parameters(), 1e-3, 0.0), loader, torch.device(dev))

    def epoch(name: str) -> float:
        model, opt, loader, dev = runs[name]
        start = time.process_time()
        h = train_loop(model, loader, optimizer=opt, device=dev, epochs=1, validate=lambda: (math.nan, math.nan),
                       seed=seed)
        return h.seconds[0] if wall else time.process_time() - start

    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for name in configs:
        epoch(name)  # warm-up
    for r in range(rounds):
        names = list(configs)
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(epoch(name))
    return TorchEpochs(dict(configs), seconds, "wall time" if wall else "CPU time")


def dropout_on_off(rounds: int = 8, splits: Splits | None = None) -> TorchEpochs:
    """On the CPU: an epoch without dropout, with nn.Dropout(0.5) and with FastDropout(0.5)."""
    return torch_epochs({"no dropout": ("cpu", 0.0, "nn.Dropout"), "nn.Dropout": ("cpu", 0.5, "nn.Dropout"),
                         "FastDropout": ("cpu", 0.5, "FastDropout")}, rounds, splits)


def gpu_name() -> str | None:
    """The first GPU (CUDA or MPS) torch sees, or None."""
    from ..device import available_devices

    return next((d for d in available_devices() if d != "cpu"), None)


def cpu_vs_gpu(rounds: int = 5, splits: Splits | None = None, gpu: str | None = None) -> TorchEpochs | None:
    """Seed 000's comparison: the same net on the CPU and on the GPU, with dropout off and on (nn.Dropout, p =
    0.5); None when there is no GPU. ``gpu``: the device to compare with (default: the first GPU)."""
    gpu = gpu_name() if gpu is None else str(pick_device(gpu))  # "cuda" without a GPU: DeviceUnavailableError
    if gpu is None:
        return None
    return torch_epochs({"CPU, dropout off": ("cpu", 0.0, "nn.Dropout"), "CPU, dropout on": ("cpu", 0.5, "nn.Dropout"),
                         "GPU, dropout off": (gpu, 0.0, "nn.Dropout"), "GPU, dropout on": (gpu, 0.5, "nn.Dropout")},
                        rounds, splits)


def experiment(*, device: str, callbacks: list, impl: str = "nn.Dropout", p: float = 0.5, epochs: int = 5,
               hidden: int = HIDDEN) -> History:
    """Panel experiment: the lesson's net in torch (40 -> hidden -> 10, dropout p), trained on mnist1d."""
    layer, p = LAYERS[check_choice(impl, "impl", LAYERS)], check_p(p)
    splits = load_data("mnist1d")
    seed_everything()
    model = mlp(splits.n_features, [hidden], splits.n_classes, dropout=p, dropout_layer=layer)
    return fit(model, splits, epochs=epochs, lr=1e-3, batch_size=BATCH, device=device, callbacks=callbacks,
               config={"impl": impl, "p": p})



def make_panel():
    """The lesson's panel: dropout implementation, p, epochs, hidden width; CPU / GPU toggle."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "impl": w.ToggleButtons(options=["nn.Dropout", "FastDropout"], value="nn.Dropout", description="dropout",
                                style=style),
        "p": w.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.1, description="p (drop)", style=style),
        "epochs": w.IntSlider(value=5, min=1, max=50, description="epochs", style=style),
        "hidden": w.SelectionSlider(options=[256, 1024, 4096], value=HIDDEN, description="hidden", style=style),
    }
    return LivePanel(experiment, knobs, title="Binomial bottleneck: torch dropout on CPU / GPU")


# --------------------------------------------------------------------------------------------------
# Seed 000's GPU story against Amdahl's law, and the claims
# --------------------------------------------------------------------------------------------------
SEED_BINOMIAL_S, SEED_TOTAL_S = 5912.656, 8431.153  # seed 000's table: binomial's tottime, the whole run's
SEED_GPU_SPEEDUP = 10.0


@dataclass(frozen=True)
class SeedAmdahl:
    """What the seed's own profile allows: with a mask share ``share`` removed, an epoch gets at most
    ``bound`` = 1/(1 − share) times faster; a ``speedup`` beyond that needs the rest ``rest_factor`` times faster."""

    share: float
    bound: float
    speedup: float
    rest_factor: float


def seed_amdahl(share: float = SEED_BINOMIAL_S / SEED_TOTAL_S, speedup: float = SEED_GPU_SPEEDUP) -> SeedAmdahl:
    """Amdahl's law on seed 000's numbers: masks made free give at most 1/(1 − share); the rest must then run
    ``speedup`` × (1 − share) times faster for the whole to be ``speedup`` times faster."""
    return SeedAmdahl(share, 1 / (1 - share), speedup, speedup * (1 - share))


MOST = 0.5  # "takes most of the time"
MASK_GOAL = 50.0  # masks ≥ 50x binomial at p = 0.5
SMALL_SHARE = 0.10  # "a small share" after the fix
MOST_OF_LIMIT = 0.8  # the fix gets ≥ 80% of the speedup a free mask gives (Amdahl's limit, measured)
SAME_ACC = 0.03  # "does not change what is learned": val accuracy within ±3 points
CLONES = 10.0  # "RNG-bound": F.dropout's forward costs ≥ 10 copies of the tensor ...
RNG_SHARE = 0.5  # ... and drawing its mask alone is ≥ half of it
SEVERAL = 3.0  # FastDropout "several times" faster than F.dropout at p = 0.5 (from the layer cost alone)
TWICE_AS_FAST = 2.0  # ... and at least twice as fast at every p (speed.fast_vs_f_dropout; the bench's goal is 5x)
LITTLE_DIFFERENCE = 2.0  # the seed's "little difference" between CPU and GPU with dropout off: under 2x


def _pct(values: Sequence[float]) -> str:
    return interval_or_value(values).format(".1f", scale=100, unit="%")


def claims(fix: FixRuns, gen_rows: list[GeneratorRow], cost: DropoutCost, on_off: TorchEpochs,
           gpu: TorchEpochs | None = None, fast: FastVsTorch | None = None) -> Claims:
    """The lesson's claims: the fix over seeds (``fix``, :func:`fix.compare_fix`), the mask generators at p = 0.5,
    PyTorch's dropout layer (``cost``) and epochs (``on_off``, :func:`dropout_on_off`), and the CPU-vs-GPU epochs
    (``gpu``, :func:`cpu_vs_gpu`; None without a GPU) and FastDropout against F.dropout at several p (``fast``,
    :func:`speed.fast_vs_f_dropout`; None: judged from ``cost`` at p = 0.5 alone). Each number is a mean with its
    95% interval over seeds or timing rounds (median and range for ``fast``);
    each verdict is three-valued (:func:`lessons_lib.stats.verdict`)."""
    c = Claims("04 the binomial bottleneck")
    share = interval_or_value(fix.shares("before"))
    prof = [q.profile for q in fix.profiled]
    c.add(f"RandomState.binomial (the dropout masks) takes most (> {MOST:.0%}) of the training time",
          "seed 000 (5,912 s of 8,431 s: 70%)", f"masks' share of each epoch, timed without the profiler: "
          f"{_pct(fix.shares('before'))}" + (f"; cProfile's reading: {_pct(prof)}" if prof else ""),
          verdict(share, MOST))
    auto = interval_or_value(next(r for r in gen_rows if r.method == "auto").ratios)
    c.add(f"Mask generation can be made much faster on the CPU (≥ {MASK_GOAL:g}x binomial at p = 0.5)",
          "lesson (goal)", f"'auto' vs binomial: {auto.format('.0f', unit='x')}", verdict(auto, MASK_GOAL))
    after = interval_or_value(fix.shares("after"))
    c.add(f"After the fix, masks are a small share (< {SMALL_SHARE:.0%}) of the epoch", "lesson (goal)",
          _pct(fix.shares("after")), verdict(after, SMALL_SHARE, "below"))
    limit = interval_or_value([f / a for f, a in zip(fix.speedups("after"), fix.speedups("free"))])
    c.add(f"The fix gets most of what Amdahl's law allows: ≥ {MOST_OF_LIMIT:.0%} of the epoch speedup of taking the "
          "masks out altogether (a free mask)", "lesson (Amdahl's law)",
          f"fix {pm(interval_or_value(fix.speedups()), '.2f', 'x')}, free mask "
          f"{pm(interval_or_value(fix.speedups('free')), '.2f', 'x')}; ratio {limit.format('.3f')}",
          verdict(limit, MOST_OF_LIMIT))
    d = fix.accuracy_diff()
    c.add(f"The fix does not change what is learned (val accuracy within ±{100 * SAME_ACC:g} points, same seeds)",
          "lesson", f"after − before, paired over seeds ({fix.epochs} epochs): "
          f"{d.format('.1f', scale=100, unit=' pts')}",
          all_of(verdict(d, -SAME_ACC, "above"), verdict(d, SAME_ACC, "below")))
    clones, rng = interval_or_value(cost.ratios("fwd", "clone")), interval_or_value(cost.ratios("bernoulli", "fwd"))
    c.add("PyTorch's CPU dropout is bound by its random number generator, not by moving the data "
          f"(forward ≥ {CLONES:g} copies, its mask alone ≥ {RNG_SHARE:.0%} of it)", "lesson",
          f"F.dropout forward = {clones.format('.0f', unit='x')} a clone; drawing its mask alone (bernoulli_): "
          f"{rng.format('.0f', scale=100, unit='%')} of it", all_of(verdict(clones, CLONES), verdict(rng, RNG_SHARE)))
    if fast is None:
        i = interval_or_value(cost.ratios("fwd_bwd", "fast"))
        c.add(f"FastDropout is several times (≥ {SEVERAL:g}x) faster than F.dropout on the CPU (forward + backward)",
              "lesson", i.format(".1f", unit="x"), verdict(i, SEVERAL))
    else:
        ps = sorted({p for p, _ in fast.ratios})
        c.add(f"FastDropout is at least {TWICE_AS_FAST:g}x as fast as F.dropout on the CPU (forward + backward) at "
              f"every p in {{{', '.join(f'{p:g}' for p in ps)}}}", "lesson",
              "F.dropout / FastDropout, median [range] of interleaved rounds: " + "; ".join(
                  f"p={p:g}, {t} thread{'s' if t > 1 else ''}: {s.median:.1f}x [{s.low:.1f}, {s.high:.1f}]"
                  for (p, t), s in ((k, fast.spread(*k)) for k in fast.ratios)),
              all_of(*fast.verdicts(TWICE_AS_FAST).values()))
    drop = interval_or_value([1 - r for r in on_off.ratios("no dropout", "nn.Dropout")])
    c.add(f"Dropout takes most (> {MOST:.0%}) of a PyTorch CPU epoch of this net too (nn.Dropout, p = 0.5)",
          "seed 000 (why dropout made the difference)", f"1 − (epoch without dropout / with it), per round "
          f"({on_off.clock}): {drop.format('.0f', scale=100, unit='%')}", verdict(drop, MOST))
    magic = f"GPU 'magically {SEED_GPU_SPEEDUP:g}x' faster than the CPU with dropout on (nn.Dropout, p = 0.5)"
    little = f"With dropout off, the GPU is about as fast as the CPU (< {LITTLE_DIFFERENCE:g}x)"
    if gpu is None:
        c.add(magic, "seed 000", "no GPU on this machine", None)
        c.add(little, "seed 000", "no GPU on this machine", None)
    else:
        on = interval_or_value(gpu.ratios("CPU, dropout on", "GPU, dropout on"))
        off = interval_or_value(gpu.ratios("CPU, dropout off", "GPU, dropout off"))
        c.add(magic, "seed 000", f"CPU epoch / GPU epoch ({gpu.clock}): {on.format('.1f', unit='x')}",
              verdict(on, SEED_GPU_SPEEDUP))
        c.add(little, "seed 000", f"CPU epoch / GPU epoch ({gpu.clock}): {off.format('.1f', unit='x')}",
              verdict(off, LITTLE_DIFFERENCE, "below"))
    return c
