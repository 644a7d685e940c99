"""Lesson 04, the binomial bottleneck: a pure-numpy MLP with dropout, profiled, fixed, and compared to torch.

Seed 000: a cProfile of a numpy training loop where ``RandomState.binomial`` (the dropout masks) took 5,912 s of
8,431 s, about 70%. This module rebuilds that loop (``40 -> 1024 -> 10`` from the core numpy layers, dropout on
the 1024 hidden units, batches of 128: one 128x1024 mask per step, drawn by a mask function passed in), profiles
it, times the mask generators of :mod:`lessons_lib.binomial_bottleneck.reference` (and the learner's), states how
exact each is, and measures PyTorch's own CPU dropout against ``FastDropout``. Figures:
:mod:`lessons_lib.binomial_bottleneck.plots`.
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from .. import numpy_layers as nl
from ..claims import Claims
from ..data import Splits
from ..data import load as load_data
from ..models import mlp
from ..seeds import get_seed, numpy_rng, seed_everything
from ..timing import interleaved_medians
from ..training import History, fit
from . import reference
from .reference import FastDropout

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
    """A cProfile run of ``epochs`` numpy epochs: the stats, the top of the table, val accuracy afterwards."""

    mask: str  # the mask function's name
    epochs: int
    stats: pstats.Stats
    table: str
    val_acc: float

    @property
    def total_seconds(self) -> float:
        return self.stats.total_tt


def profile_training(mask: Mask = reference.binomial_mask, epochs: int = 3, splits: Splits | None = None,
                     seed: int | None = None, top: int = 10) -> Profile:
    """Train :class:`NumpyMLP` with ``mask`` for ``epochs`` under cProfile; the table's top ``top`` rows by tottime."""
    x, y, xv, yv = numpy_data(splits)
    net = NumpyMLP(n_in=x.shape[1], mask=mask, seed=seed)
    prof = cProfile.Profile()
    with blas_threads():
        prof.enable()
        for _ in range(epochs):
            net.train_epoch(x, y)
        prof.disable()
        val_acc = net.accuracy(xv, yv)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    table = buf.getvalue()
    table = table[table.index("   ncalls"):] if "   ncalls" in table else table
    return Profile(getattr(mask, "__name__", "mask"), epochs, stats, table.rstrip(), val_acc)


@dataclass
class EpochTimes:
    """Median wall seconds of one numpy epoch (no profiler), before and after the fix, timed round-robin."""

    before: float
    after: float

    @property
    def speedup(self) -> float:
        return self.before / self.after


def epoch_seconds(after: Mask, before: Mask = reference.binomial_mask, splits: Splits | None = None,
                  repeats: int = 3, seed: int | None = None) -> EpochTimes:
    """Time one training epoch of the net with each mask function, interleaved."""
    x, y, _, _ = numpy_data(splits)
    nets = {k: NumpyMLP(n_in=x.shape[1], mask=m, seed=seed) for k, m in (("before", before), ("after", after))}
    with blas_threads():
        t = interleaved_medians({k: (lambda n=n: n.train_epoch(x, y)) for k, n in nets.items()}, repeats, warmup=1)
    return EpochTimes(t["before"], t["after"])


def train_numpy(mask: Mask, epochs: int = 10, splits: Splits | None = None, seed: int | None = None) -> list[float]:
    """Val accuracy after each of ``epochs`` epochs (to check the fix does not change what is learned)."""
    x, y, xv, yv = numpy_data(splits)
    net = NumpyMLP(n_in=x.shape[1], mask=mask, seed=seed)
    accs = []
    with blas_threads():
        for _ in range(epochs):
            net.train_epoch(x, y)
            accs.append(net.accuracy(xv, yv))
    return accs


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
    seconds: float
    speedup: float  # binomial seconds / this
    keep_prob: float | None


def compare_generators(shape: tuple[int, int] = (BATCH, HIDDEN), p: float = 0.5, repeats: int = 15,
                       seed: int | None = None, include_torch: bool = True, uint8_mask: Mask = reference.uint8_mask,
                       bits_mask=reference.bits_mask) -> list[GeneratorRow]:
    """Median time of each mask method at ``shape`` and ``p`` (the "uint8" and "bits" rows time the functions
    passed in: the learner's once they pass their checks), plus two floors: only the random bytes a p = 0.5 mask
    needs, and writing a bool array of that size."""
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
    times = interleaved_medians(fns, repeats)
    rows = []
    for k, t in times.items():
        kp = None if k.startswith("floor") else keep_probability("uniform" if k.startswith("torch") else k, p)
        rows.append(GeneratorRow(k, t, times["binomial"] / t, kp))
    return rows


def generators_table(rows: list[GeneratorRow]) -> str:
    lines = [f"{'method':<20} {'time':>10} {'vs binomial':>12} {'keep prob':>10}"]
    for r in rows:
        kp = "" if r.keep_prob is None else f"{r.keep_prob:.6f}"
        lines.append(f"{r.method:<20} {r.seconds * 1e6:>8.1f}µs {r.speedup:>11.1f}x {kp:>10}")
    return "\n".join(lines)


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
    forward, and forward + backward of ``F.dropout`` and of ``FastDropout``."""

    clone: float
    rand: float
    bernoulli: float
    dropout_fwd: float
    dropout_fwd_bwd: float
    fast_fwd_bwd: float

    @property
    def clones(self) -> float:
        """F.dropout forward, in clones."""
        return self.dropout_fwd / self.clone

    @property
    def mask_share(self) -> float:
        """Share of F.dropout's forward that drawing its mask alone takes."""
        return self.bernoulli / self.dropout_fwd

    @property
    def fast_speedup(self) -> float:
        return self.dropout_fwd_bwd / self.fast_fwd_bwd

    def lines(self) -> str:
        rows = (("clone", self.clone), ("torch.rand", self.rand), ("bernoulli_ mask", self.bernoulli),
                ("F.dropout fwd", self.dropout_fwd), ("F.dropout fwd+bwd", self.dropout_fwd_bwd),
                ("FastDropout fwd+bwd", self.fast_fwd_bwd))
        return "\n".join(f"  {k:<20} {v * 1e6:9.0f} µs  ({v / self.clone:6.1f}x a clone)" for k, v in rows)


def dropout_layer_cost(shape: tuple[int, int] = (BATCH, HIDDEN), p: float = 0.5, device: str = "cpu",
                       repeats: int = 15) -> DropoutCost:
    """Time PyTorch's dropout against a copy, its random numbers, and FastDropout (round-robin medians)."""
    dev = torch.device(device)
    x = torch.randn(*shape, device=dev)
    xg = x.clone().requires_grad_(True)
    g = torch.ones(*shape, device=dev)
    fast = FastDropout(p).train()

    def fwd_bwd(fn):
        def step():
            fn(xg).backward(g)
            xg.grad = None
        return step

    t = interleaved_medians({
        "clone": x.clone,
        "rand": lambda: torch.rand(*shape, device=dev),
        "bernoulli": lambda: torch.empty_like(x).bernoulli_(1.0 - p),
        "fwd": lambda: F.dropout(x, p, training=True),
        "fwd_bwd": fwd_bwd(lambda t: F.dropout(t, p, training=True)),
        "fast": fwd_bwd(fast),
    }, repeats, warmup=3, device=dev)
    return DropoutCost(t["clone"], t["rand"], t["bernoulli"], t["fwd"], t["fwd_bwd"], t["fast"])


def experiment(*, device: str, callbacks: list, impl: str = "nn.Dropout", p: float = 0.5, epochs: int = 5,
               hidden: int = HIDDEN) -> History:
    """Panel experiment: the lesson's net in torch (40 -> hidden -> 10, dropout p), trained on mnist1d."""
    splits = load_data("mnist1d")
    seed_everything()
    layer = {"FastDropout": FastDropout, "nn.Dropout": nn.Dropout}[impl]
    model = mlp(splits.n_features, [hidden], splits.n_classes, dropout=p, dropout_layer=layer)
    return fit(model, splits, epochs=epochs, lr=1e-3, batch_size=BATCH, device=device, callbacks=callbacks,
               config={"impl": impl, "p": p})


@dataclass
class GpuRuns:
    """Median seconds per epoch of the torch version on the CPU and on a GPU (first epoch = warm-up)."""

    gpu: str
    cpu_s: float
    gpu_s: float


def cpu_vs_gpu(impl: str = "nn.Dropout", p: float = 0.5, epochs: int = 3) -> GpuRuns | None:
    """The torch net on the CPU and on the GPU; None when there is no GPU."""
    from ..device import available_devices

    gpus = [d for d in available_devices() if d != "cpu"]
    if not gpus:
        return None
    secs = [float(np.median(experiment(device=d, callbacks=[], impl=impl, p=p, epochs=epochs).seconds[1:]))
            for d in ("cpu", gpus[0])]
    return GpuRuns(gpus[0], *secs)


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
# Claims
# --------------------------------------------------------------------------------------------------
def rng_bound_claim(c: Claims, cost: DropoutCost, source: str) -> None:
    """Add 'PyTorch's CPU dropout is RNG-bound': F.dropout forward >= 10 clones, its mask alone >= half of it."""
    c.add("PyTorch's CPU dropout is bound by its random number generator, not by moving the data", source,
          f"F.dropout forward = {cost.clones:.0f}x a clone; drawing its mask alone (bernoulli_) = "
          f"{100 * cost.mask_share:.0f}% of it", cost.clones >= 10 and cost.mask_share >= 0.5)


def claims(before: Profile, after: Profile, share_before: float, share_after: float, epoch: EpochTimes,
           gen_rows: list[GeneratorRow], cost: DropoutCost, gpu_runs: GpuRuns | None = None) -> Claims:
    """The lesson's claims table; the shares are read off the two profiles by ``mask_share``."""
    c = Claims("04 the binomial bottleneck")
    c.add("RandomState.binomial (the dropout masks) takes most of the training time (~70% in the seed)",
          "000: 5,912 s of 8,431 s", f"{100 * share_before:.0f}% of profiled time in mask generation",
          share_before > 0.5)
    auto = next(r for r in gen_rows if r.method == "auto")
    c.add("Mask generation can be made much faster on the CPU (goal ≥ 50x at p = 0.5)", "lesson / benchmark goal",
          f"'auto' {auto.speedup:.0f}x faster than binomial", auto.speedup >= 50)
    c.add("After the fix, masks are a small share of the profile (< 10%)", "benchmark goal",
          f"{100 * share_after:.1f}%", share_after < 0.10)
    c.add("The numpy epoch gets ≥ 3x faster with fast masks", "benchmark goal", f"{epoch.speedup:.1f}x",
          epoch.speedup >= 3)
    c.add("The fix does not change what is learned (val accuracy within 3 points)", "lesson",
          f"{before.val_acc:.3f} vs {after.val_acc:.3f}", abs(before.val_acc - after.val_acc) <= 0.03)
    rng_bound_claim(c, cost, "issue 3 (~170x a copy)")
    c.add("FastDropout is ≥ 5x faster than F.dropout on the CPU (forward + backward)", "benchmark goal",
          f"{cost.fast_speedup:.1f}x", cost.fast_speedup >= 5)
    if gpu_runs is None:
        c.add("GPU 'magically 10x' faster than the CPU with dropout on", "000", "no GPU on this machine", None)
    else:
        ratio = gpu_runs.cpu_s / gpu_runs.gpu_s
        c.add("GPU 'magically 10x' faster than the CPU with dropout on (torch, nn.Dropout, s/epoch)", "000",
              f"{ratio:.1f}x", ratio >= 10)
    return c
