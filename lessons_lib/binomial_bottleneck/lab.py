"""Lesson 04, the binomial bottleneck: a pure-numpy MLP with dropout, profiled, fixed, and compared to torch.

Seed 000: a cProfile of a numpy training loop where ``RandomState.binomial`` (the dropout masks) took
5,912 s of 8,431 s, about 70%. This module rebuilds that loop (the MLP of :mod:`lessons_lib.numpy_layers`,
``40 -> 1024 -> 10`` with dropout on the 1024 hidden units, batches of 128: one 128x1024 mask per step),
profiles it, swaps the mask generator for a fast one (:mod:`lessons_lib.masks`), and measures the gain.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from ..claims import Claims
from ..data import Splits
from ..data import load as load_data
from ..dropout.lab import FastDropout, dropout_layer_cost, rng_bound_claim
from ..exercises import check
from ..masks import MASK_METHODS, bernoulli_mask, keep_probability, memory_floor, random_bits_floor
from ..models import mlp
from ..numpy_layers import (
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from ..seeds import get_seed, numpy_rng, seed_everything
from ..timing import interleaved_medians
from ..training import History, fit

HIDDEN = 1024
BATCH = 128
BLAS_THREADS = 1  # numpy's BLAS pinned to one thread: stable profiles on a shared 2-core machine


def blas_threads(n: int | None = BLAS_THREADS):
    """Context manager limiting numpy's BLAS (and OpenMP) thread pools to ``n`` (None: no limit)."""
    return threadpool_limits(n)


class NumpyMLP:
    """``n_in -> hidden -> n_out`` with ReLU and inverted dropout ``p`` on the hidden layer, SGD + momentum.

    ``mask_method``: "binomial" is seed 000's ``RandomState.binomial(1, 1-p, size)`` (drawn from
    ``RandomState(seed)``); any other method of :data:`lessons_lib.masks.MASK_METHODS` or "auto" draws from
    a PCG64 ``Generator(seed)``. Arrays are float32.
    """

    def __init__(self, n_in: int = 40, hidden: int = HIDDEN, n_out: int = 10, p: float = 0.5,
                 mask_method: str = "binomial", seed: int | None = None, lr: float = 0.05, momentum: float = 0.9):
        seed = get_seed() if seed is None else seed
        init = numpy_rng(seed, stream=40)
        self.params = [
            (init.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(np.float32),
            np.zeros(hidden, np.float32),
            (init.standard_normal((hidden, n_out)) * np.sqrt(1.0 / hidden)).astype(np.float32),
            np.zeros(n_out, np.float32),
        ]
        self.velocity = [np.zeros_like(w) for w in self.params]
        self.p, self.lr, self.momentum = p, lr, momentum
        self.mask_method = mask_method
        self.rng = np.random.RandomState(seed) if mask_method == "binomial" else numpy_rng(seed, stream=41)
        self.shuffle_rng = numpy_rng(seed, stream=42)

    def forward(self, x: np.ndarray, train: bool = True) -> tuple[np.ndarray, tuple]:
        w1, b1, w2, b2 = self.params
        a, c1 = linear_forward(x, w1, b1)
        h, c2 = relu_forward(a)
        hd, c3 = dropout_forward(h, self.p, train=train, rng=self.rng, method=self.mask_method)
        logits, c4 = linear_forward(hd, w2, b2)
        return logits, (c1, c2, c3, c4)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        logits, (c1, c2, c3, c4) = self.forward(x, train=True)
        loss, c5 = softmax_cross_entropy_forward(logits, y)
        dlogits = softmax_cross_entropy_backward(c5)
        dhd, dw2, db2 = linear_backward(dlogits, c4)
        da = relu_backward(dropout_backward(dhd, c3), c2)
        _, dw1, db1 = linear_backward(da, c1, need_dx=False)
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
            idx = order[i : i + batch_size]
            losses.append(self.train_step(x[idx], y[idx]))
        return float(np.mean(losses))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        logits, _ = self.forward(x, train=False)
        return float((logits.argmax(1) == y).mean())


def numpy_data(splits: Splits | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mnist1d as float32/int64 numpy arrays (x_train, y_train, x_val, y_val)."""
    s = splits if splits is not None else load_data("mnist1d")
    return s.x_train.numpy(), s.y_train.numpy(), s.x_val.numpy(), s.y_val.numpy()


@dataclass
class Profile:
    """A cProfile run of ``epochs`` numpy epochs: the pstats table, and the share of time in mask generation."""

    mask_method: str
    epochs: int
    table: str
    total_seconds: float
    mask_seconds: float
    val_acc: float

    @property
    def mask_share(self) -> float:
        return self.mask_seconds / self.total_seconds


def _mask_seconds(stats: pstats.Stats) -> float:
    """Cumulative seconds inside ``bernoulli_mask`` (the mask generator, whatever the method)."""
    return sum(v[3] for (fname, _, func), v in stats.stats.items()
               if func == "bernoulli_mask" and fname.endswith("masks.py"))


def profile_training(mask_method: str = "binomial", epochs: int = 3, splits: Splits | None = None,
                     seed: int | None = None, top: int = 10) -> Profile:
    """Train :class:`NumpyMLP` for ``epochs`` under cProfile; return the top-``top`` table sorted by tottime."""
    x, y, xv, yv = numpy_data(splits)
    net = NumpyMLP(n_in=x.shape[1], mask_method=mask_method, seed=seed)
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
    return Profile(mask_method, epochs, table.rstrip(), stats.total_tt, _mask_seconds(stats), val_acc)


def epoch_seconds(mask_methods: tuple[str, ...] = ("binomial", "auto"), splits: Splits | None = None,
                  repeats: int = 3, seed: int | None = None) -> dict[str, float]:
    """Median wall seconds of one numpy training epoch (no profiler) per mask method, timed round-robin."""
    x, y, _, _ = numpy_data(splits)
    nets = {m: NumpyMLP(n_in=x.shape[1], mask_method=m, seed=seed) for m in mask_methods}
    with blas_threads():
        return interleaved_medians({m: (lambda n=n: n.train_epoch(x, y)) for m, n in nets.items()}, repeats, warmup=1)


def train_numpy(mask_method: str, epochs: int = 10, splits: Splits | None = None,
                seed: int | None = None) -> list[float]:
    """Val accuracy after each of ``epochs`` epochs (to check the fix does not change what is learned)."""
    x, y, xv, yv = numpy_data(splits)
    net = NumpyMLP(n_in=x.shape[1], mask_method=mask_method, seed=seed)
    accs = []
    with blas_threads():
        for _ in range(epochs):
            net.train_epoch(x, y)
            accs.append(net.accuracy(xv, yv))
    return accs


# --------------------------------------------------------------------------------------------------
# Mask generators compared
# --------------------------------------------------------------------------------------------------
@dataclass
class GeneratorRow:
    method: str
    seconds: float
    speedup: float  # binomial seconds / this
    keep_prob: float | None
    note: str


def compare_generators(shape: tuple[int, int] = (BATCH, HIDDEN), p: float = 0.5, repeats: int = 15,
                       seed: int | None = None, include_torch: bool = True) -> list[GeneratorRow]:
    """Median time of each mask method at ``shape`` and ``p``, plus two floors (random bits, memory)."""
    seed = get_seed() if seed is None else seed
    rs = np.random.RandomState(seed)
    g = numpy_rng(seed, stream=43)
    n = int(np.prod(shape))
    fns: dict[str, Callable[[], object]] = {"binomial": lambda: bernoulli_mask(shape, p, "binomial", rs)}
    for m in MASK_METHODS:
        if m in ("binomial", "torch") or (m == "bits" and p != 0.5):
            continue
        fns[m] = (lambda m=m: bernoulli_mask(shape, p, m, g))
    fns["auto"] = lambda: bernoulli_mask(shape, p, "auto", g)
    if include_torch:
        fns["torch (CPU)"] = lambda: torch.rand(shape) < (1.0 - p)
    fns["floor: random bits"] = lambda: random_bits_floor(g, n)
    fns["floor: memory"] = lambda: memory_floor(shape)
    times = interleaved_medians(fns, repeats)
    base = times["binomial"]
    rows = []
    for k, t in times.items():
        if k.startswith("floor"):
            kp, note = None, ("n/8 random bytes, not unpacked" if "bits" in k else "write n bools, no randomness")
        else:
            meth = "torch" if k.startswith("torch") else k
            kp = keep_probability(meth, p)
            note = MASK_METHODS["bits" if k == "auto" and p == 0.5 else meth].description if meth != "auto" else ""
        rows.append(GeneratorRow(k, t, base / t, kp, note))
    return rows


def generators_table(rows: list[GeneratorRow]) -> str:
    lines = [f"{'method':<20} {'time':>10} {'vs binomial':>12} {'keep prob':>10}"]
    for r in rows:
        kp = "" if r.keep_prob is None else f"{r.keep_prob:.6f}"
        lines.append(f"{r.method:<20} {r.seconds * 1e6:>8.1f}µs {r.speedup:>11.1f}x {kp:>10}")
    return "\n".join(lines)


def plot_generators(rows: list[GeneratorRow], title: str = "", path: str | None = None):
    """Horizontal bars, log scale: time per 128x1024 mask; floors hatched."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.2))
    names = [r.method for r in rows]
    vals = [r.seconds * 1e6 for r in rows]
    colors = ["#d62728" if r.method == "binomial" else ("#bbbbbb" if r.method.startswith("floor") else "#1f77b4")
              for r in rows]
    bars = ax.barh(names, vals, color=colors)
    for b, r in zip(bars, rows):
        if r.method.startswith("floor"):
            b.set_hatch("//")
        ax.text(b.get_width() * 1.08, b.get_y() + b.get_height() / 2, f"{r.seconds * 1e6:.0f} µs ({r.speedup:.0f}x)",
                va="center", fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlim(min(vals) / 2, max(vals) * 8)
    ax.set_xlabel("µs per mask (log scale), median")
    ax.set_title(title or "Dropout mask generators")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)
    return fig


# --------------------------------------------------------------------------------------------------
# torch: CPU vs GPU, and PyTorch's own CPU dropout
# --------------------------------------------------------------------------------------------------
def torch_dropout_cost(shape: tuple[int, int] = (BATCH, HIDDEN), p: float = 0.5, device: str = "cpu",
                       repeats: int = 15) -> dict[str, float]:
    """:func:`lessons_lib.dropout.dropout_layer_cost` at the lesson's mask shape."""
    return dropout_layer_cost(shape, p, device, repeats)


def experiment(*, device: str, callbacks: list, impl: str = "FastDropout", p: float = 0.5, epochs: int = 5,
               hidden: int = HIDDEN) -> History:
    """Panel experiment: the lesson's net in torch (40 -> hidden -> 10, dropout p), trained on mnist1d."""
    splits = load_data("mnist1d")
    seed_everything()
    layer = {"FastDropout": FastDropout, "nn.Dropout": nn.Dropout}[impl]
    model = mlp(splits.n_features, [hidden], splits.n_classes, dropout=p, dropout_layer=layer)
    return fit(model, splits, epochs=epochs, lr=1e-3, batch_size=BATCH, device=device, callbacks=callbacks,
               config={"impl": impl, "p": p})


def cpu_vs_gpu(impl: str = "nn.Dropout", p: float = 0.5, epochs: int = 3) -> dict[str, float] | None:
    """Median seconds per epoch of the torch version on the CPU and on the GPU (first epoch = warm-up);
    None when there is no GPU."""
    from ..device import available_devices

    gpus = [d for d in available_devices() if d != "cpu"]
    if not gpus:
        return None
    out = {}
    for name, dev in (("cpu", "cpu"), ("gpu", gpus[0])):
        h = experiment(device=dev, callbacks=[], impl=impl, p=p, epochs=epochs)
        out[name] = float(np.median(h.seconds[1:]))
    out["gpu_name"] = gpus[0]
    return out


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
# Claims and checks
# --------------------------------------------------------------------------------------------------
def lesson_claims(before: Profile, after: Profile, epoch_before: float, epoch_after: float,
                  gen_rows: list[GeneratorRow], cost: dict[str, float], gpu_runs: dict | None = None) -> Claims:
    c = Claims("04 the binomial bottleneck")
    c.add("RandomState.binomial (the dropout masks) takes most of the training time (~70% in the seed)",
          "000: 5,912 s of 8,431 s", f"{100 * before.mask_share:.0f}% of profiled time in mask generation",
          before.mask_share > 0.5)
    auto = next(r for r in gen_rows if r.method == "auto")
    c.add("Mask generation can be made much faster on the CPU (goal ≥ 50x at p = 0.5)", "lesson / benchmark goal",
          f"'auto' {auto.speedup:.0f}x faster than binomial", auto.speedup >= 50)
    c.add("After the fix, masks are a small share of the profile (< 10%)", "benchmark goal",
          f"{100 * after.mask_share:.1f}%", after.mask_share < 0.10)
    sp = epoch_before / epoch_after
    c.add("The numpy epoch gets ≥ 3x faster with fast masks", "benchmark goal", f"{sp:.1f}x", sp >= 3)
    c.add("The fix does not change what is learned (val accuracy within 3 points)", "lesson",
          f"{before.val_acc:.3f} vs {after.val_acc:.3f}", abs(before.val_acc - after.val_acc) <= 0.03)
    rng_bound_claim(c, cost, "issue 3 (~170x a copy)")
    fs = cost["F.dropout fwd+bwd"] / cost["FastDropout fwd+bwd"]
    c.add("FastDropout is ≥ 5x faster than F.dropout on the CPU (forward + backward)", "benchmark goal",
          f"{fs:.1f}x", fs >= 5)
    if gpu_runs is None:
        c.add("GPU 'magically 10x' faster than the CPU with dropout on", "000", "no GPU on this machine", None)
    else:
        ratio = gpu_runs["cpu"] / gpu_runs["gpu"]
        c.add("GPU 'magically 10x' faster than the CPU with dropout on (torch, nn.Dropout, s/epoch)", "000",
              f"{ratio:.1f}x", ratio >= 10)
    return c


def check_mask_share(answer, profile: Profile) -> bool:
    """Exercise: from the 'before' profile, what fraction of the time went to mask generation? (±0.05)"""
    return check(answer, round(profile.mask_share, 2), abs_tol=0.05,
                 praise="mask seconds / total seconds of the profile.",
                 hint="divide the cumulative time of bernoulli_mask by the total time printed above the table.")


def check_amdahl(answer) -> bool:
    """Exercise: if masks are 70% of an epoch and become free, what is the best possible speedup?"""
    return check(answer, 1 / 0.3, rel_tol=0.02, praise="Amdahl: 1 / (1 - 0.7) ≈ 3.3x, however fast the masks get.",
                 hint="the other 30% of the time remains: speedup = total / remaining.")


def check_uint8_keep(answer) -> bool:
    """Exercise: keep probability of the 'uint8' method at p = 0.1 (keep if byte < round(256 * 0.9))."""
    return check(answer, keep_probability("uint8", 0.1), rel_tol=1e-9,
                 praise="round(230.4) = 230, and 230/256 = 0.8984375: p is quantized to 1/256.",
                 hint="how many of the 256 byte values are below round(256 * 0.9)?")


__all__ = ["NumpyMLP", "profile_training", "epoch_seconds", "compare_generators", "torch_dropout_cost",
           "make_panel", "lesson_claims", "dropout_forward"]
