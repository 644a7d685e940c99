"""Lesson 03, dropout: the experiments, the live panel and the claims table.

The from-scratch part runs on whichever ``dropout_forward`` / ``dropout_backward`` pair the notebook hands in (the
learner's once they pass their checks, else :mod:`lessons_lib.dropout.reference`): the reference's numpy MLP with
that dropout after each hidden layer, its gradient check, the sweep of drop rates over several paired seeds
(overfitting and the train/val gap), the train/eval pitfall and the cost measurements. Every number noise can move
is measured over seeds or timing rounds and judged by its 95% interval (:mod:`lessons_lib.stats`). Figures:
:mod:`lessons_lib.dropout.plots`. The live panel trains the same MLP in PyTorch with ``nn.Dropout``, on the CPU or a
GPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..claims import Claims
from ..data import Splits
from ..data import load as load_data
from ..device import pick_device
from ..gradcheck import numerical_gradient
from ..history import History
from ..models import mlp
from ..multiseed import fit_seeds
from ..seeds import get_seed, numpy_rng, replicate_seeds, seed_everything
from ..stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Interval, mean_interval, paired_interval, verdict
from ..timing import cpu_rounds, min_ratios
from ..training import fit
from ..validate import BadArgument, check_int, check_p, check_shape
from . import reference

Forward = Callable[..., tuple]  # dropout_forward(x, p, train, rng) -> (out, cache)
Backward = Callable[[np.ndarray, tuple], np.ndarray]  # dropout_backward(dout, cache) -> dx

WIDTHS = (256, 256)
N_TRAIN = 1000  # a small training set: overfitting (and what dropout does about it) shows within seconds
EPOCHS = 40
LR = 2e-3
BATCH = 128
BLAS_THREADS = 1  # numpy's BLAS on one thread: small matrices, and stable timings on a shared machine
N_SEEDS = 8  # runs per drop rate, the same seeds for every rate: the size knob of the claims (raise it for tighter
#              intervals; each run of the numpy net is about a second on one CPU core)


def lesson_splits(n_train: int = N_TRAIN, seed: int | None = None) -> Splits:
    """mnist1d with only the first ``n_train`` training signals (val set unchanged: 800 signals)."""
    return load_data("mnist1d", seed=seed).subset_train(n_train)


@dataclass
class GradientRow:
    """Relative error of one analytic gradient against centred differences (float64)."""

    name: str
    error: float

    @property
    def ok(self) -> bool:
        return self.error < 1e-6


def net_gradient_check(forward: Forward = reference.dropout_forward, backward: Backward = reference.dropout_backward,
                       seed: int = 0, p: float = 0.5) -> list[GradientRow]:
    """The dropout layer alone, then a whole small net (4 -> 6 -> 6 -> 3, dropout after each hidden layer),
    against centred differences with the masks held fixed. Whole-net errors are norm-wise,
    ||a - n|| / (||a|| + ||n||): an element-wise ratio blows up on entries that are nearly zero."""
    rows = [GradientRow("dropout layer dx", reference.gradient_error(forward, backward, seed=seed))]
    data = np.random.default_rng(seed)
    x, y = data.standard_normal((5, 4)), data.integers(0, 3, 5)
    net = reference.NumpyNet([4, 6, 6, 3], p, forward, backward, seed=seed, dtype=np.float64)

    def loss() -> float:
        return net.loss_and_grads(x, y, np.random.default_rng(seed))[0]

    grads = net.loss_and_grads(x, y, np.random.default_rng(seed))[1]
    names = [f"net d{k}{i}" for i in range(1, len(net.weights) + 1) for k in "Wb"]
    for name, param, g in zip(names, net.params, grads):
        num = numerical_gradient(loss, param)
        rows.append(GradientRow(name, float(np.linalg.norm(g - num) / max(np.linalg.norm(g) + np.linalg.norm(num),
                                                                          1e-12))))
    return rows


def gradient_table(rows: list[GradientRow]) -> str:
    return "\n".join(f"{r.name:<18} relative error {r.error:9.2e}   {'✓ < 1e-6' if r.ok else '✗ bug'}"
                     for r in rows)


# --------------------------------------------------------------------------------------------------
# Statistics against nn.Dropout
# --------------------------------------------------------------------------------------------------
@dataclass
class StatsRow:
    """Output statistics of a dropout layer on a tensor of ones: mean, variance, dropped fraction."""

    name: str
    mean: float
    var: float
    dropped: float


def compare_with_nn_dropout(forward: Forward = reference.dropout_forward, p: float = 0.5,
                            shape: tuple[int, int] = (512, 1024), seed: int | None = None) -> list[StatsRow]:
    """Theory (mean 1, variance p/(1-p), dropped p), the numpy ``forward`` and ``torch.nn.Dropout`` on ones."""
    p, shape = check_p(p), check_shape(shape)
    seed_everything(seed)
    ours, _ = forward(np.ones(shape), p, True, numpy_rng(seed, stream=33))
    theirs = torch.nn.Dropout(p).train()(torch.ones(shape)).double().numpy()
    rows = [StatsRow("theory", 1.0, p / (1 - p), p)]
    for name, y in (("yours (numpy)", np.asarray(ours)), ("nn.Dropout", theirs)):
        rows.append(StatsRow(name, float(y.mean()), float(y.var()), float(np.mean(y == 0))))
    return rows


def stats_table(rows: list[StatsRow]) -> str:
    lines = [f"{'':<14} {'mean':>8} {'variance':>9} {'dropped':>8}"]
    lines += [f"{r.name:<14} {r.mean:>8.4f} {r.var:>9.4f} {r.dropped:>8.4f}" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Repeated runs: the same seeds for every drop rate (paired), and verdicts on their intervals
# --------------------------------------------------------------------------------------------------
def run_seeds(n: int = N_SEEDS, seed: int | None = None) -> list[int]:
    """The ``n`` run seeds of the sweep (each seeds a net's initial weights, batch order and masks), derived from
    the course seed: another ``LESSONS_SEED`` repeats every run on fresh seeds."""
    return replicate_seeds(n, stream=30, seed=seed)


def maybe_interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95% interval over runs, or None with fewer than two runs (a single run has no interval)."""
    return mean_interval(values) if len(values) >= 2 else None


def within(interval: Interval, low: float, high: float) -> str:
    """Three-valued verdict of "the value lies in [low, high]" (an equivalence margin): holds when the whole
    interval is inside, does not hold when it is wholly outside, else inconclusive."""
    a, b = verdict(interval, low, "above"), verdict(interval, high, "below")
    if a == HOLDS and b == HOLDS:
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in (a, b) else INCONCLUSIVE


def _fmt(i: Interval | None, value: float, fmt: str = ".3f") -> str:
    return f"{value:{fmt}}" if i is None else f"{i.mean:{fmt}} ± {i.half_width:{fmt}}"


# --------------------------------------------------------------------------------------------------
# The sweep of drop rates, and the train/eval pitfall
# --------------------------------------------------------------------------------------------------
class NumpyRun:
    """One training run of a :class:`reference.NumpyNet` with dropout ``p``, advanced an epoch at a time (so that
    several runs can be timed round-robin). Per epoch the history records the training seconds as CPU time of the
    process (``time.process_time``; numpy's BLAS on one thread: on a quiet machine this is the wall time, and
    another process on a shared machine does not add to it; evaluation excluded), and loss and accuracy on the
    whole training set (in eval mode) and on the validation set. ``seed``: the run seed (weights, batches, masks)."""

    def __init__(self, splits: Splits, p: float, forward: Forward = reference.dropout_forward,
                 backward: Backward = reference.dropout_backward, *, widths=WIDTHS, batch_size: int = BATCH,
                 seed: int | None = None):
        self.x, self.y, self.xv, self.yv = (a.numpy() for a in (splits.x_train, splits.y_train, splits.x_val,
                                                                 splits.y_val))
        self.net = reference.NumpyNet([self.x.shape[1], *widths, splits.n_classes], p, forward, backward, seed=seed)
        self.history = History(config={"p": p, "impl": "numpy", "seed": seed}, device="cpu")
        self.batch_size = batch_size

    def epoch(self) -> None:
        n, net, h = len(self.x), self.net, self.history
        with threadpool_limits(BLAS_THREADS):
            t0 = time.process_time()
            order = net.shuffle_rng.permutation(n)
            for i in range(0, n, self.batch_size):
                net.train_step(self.x[order[i:i + self.batch_size]], self.y[order[i:i + self.batch_size]])
            secs = time.process_time() - t0
            (tl, ta), (vl, va) = net.evaluate(self.x, self.y), net.evaluate(self.xv, self.yv)
        steps = math.ceil(n / self.batch_size)
        h.append({"epoch": len(h), "train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va,
                  "seconds": secs, "samples_per_s": n / max(secs, 1e-9), "step_seconds": secs / steps})
        h.steps += steps


METRICS = ("train_acc", "val_acc", "best_val_acc", "gap", "epoch_s")


def run_metric(h: History, metric: str) -> float:
    """One run's number: last-epoch train / val accuracy, best val accuracy, the last epoch's train − val gap,
    or the median seconds per epoch."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return {"train_acc": lambda: h.train_acc[-1], "val_acc": lambda: h.val_acc[-1],
            "best_val_acc": lambda: h.best("val_acc")[1], "gap": lambda: h.train_acc[-1] - h.val_acc[-1],
            "epoch_s": lambda: float(np.median(h.seconds))}[metric]()


@dataclass
class SweepRow:
    """One drop rate over the seeds: means of the runs' last-epoch accuracies, best val accuracy and gap (with
    95% intervals when there are two runs or more), and the median of the runs' median seconds per epoch."""

    p: float
    train_acc: float
    val_acc: float
    best_val_acc: float
    gap: float  # train_acc - val_acc, last epoch
    epoch_s: float  # median CPU seconds per epoch
    n: int = 1
    best_ci: Interval | None = None
    gap_ci: Interval | None = None


@dataclass
class Sweep:
    """Numpy runs per dropout rate, the same ``seeds`` for every rate (paired: run i of every rate has the same
    initial weights and batch order): ``histories[p][i]`` is seed ``seeds[i]``'s run; ``nets[p]`` the first
    seed's trained net."""

    ps: list[float]
    histories: dict[float, list[History]]
    seeds: list[int] = field(default_factory=list)
    nets: dict[float, reference.NumpyNet] = field(default_factory=dict)

    def values(self, p: float, metric: str) -> list[float]:
        """``metric`` (see :func:`run_metric`) of every seed's run at drop rate ``p``, in seed order."""
        return [run_metric(h, metric) for h in self.histories[p]]

    def rows(self) -> list[SweepRow]:
        return [self.row(p) for p in self.ps]

    def row(self, p: float) -> SweepRow:
        v = {m: self.values(p, m) for m in METRICS}
        return SweepRow(p, *(float(np.mean(v[m])) for m in METRICS[:4]), float(np.median(v["epoch_s"])),
                        len(v["gap"]), maybe_interval(v["best_val_acc"]), maybe_interval(v["gap"]))

    def table(self) -> str:
        n = len(self.histories[self.ps[0]])
        lines = [f"{n} run(s) per p, the same seeds for every p; means" + (" ± 95% interval" if n > 1 else "")
                 + "; s/epoch: median CPU time",
                 f"{'p':>5} {'train acc':>10} {'val acc':>8} {'best val':>15} {'gap':>15} {'s/epoch':>8}"]
        lines += [f"{r.p:>5.2f} {r.train_acc:>10.3f} {r.val_acc:>8.3f} {_fmt(r.best_ci, r.best_val_acc):>15} "
                  f"{_fmt(r.gap_ci, r.gap):>15} {r.epoch_s:>8.4f}" for r in self.rows()]
        return "\n".join(lines)


def dropout_sweep(forward: Forward = reference.dropout_forward, backward: Backward = reference.dropout_backward,
                  ps: Sequence[float] = (0.0, 0.2, 0.5), *, epochs: int = EPOCHS, splits: Splits | None = None,
                  seeds: Sequence[int] | None = None, n_seeds: int = N_SEEDS) -> Sweep:
    """Train the numpy MLP with the given dropout pair once per drop rate in ``ps`` and per run seed (``seeds``,
    default :func:`run_seeds` (``n_seeds``)). The runs take turns, an epoch each, so that a change of load on a
    shared machine hits every run alike (fair seconds per epoch)."""
    ps = [check_p(p, "ps[]") for p in ps]
    if not ps or len(set(ps)) != len(ps):
        raise BadArgument(f"ps={ps!r}: give one or more distinct drop rates, e.g. (0.0, 0.2, 0.5)")
    epochs = check_int(epochs, "epochs", low=1)
    seeds = [check_int(s, "seeds[]", low=0) for s in seeds] if seeds is not None else run_seeds(
        check_int(n_seeds, "n_seeds", low=1))
    if not seeds:
        raise BadArgument("seeds=[]: give at least one run seed (or leave seeds=None and set n_seeds)")
    splits = splits if splits is not None else lesson_splits()
    runs = {p: [NumpyRun(splits, p, forward, backward, seed=s) for s in seeds] for p in ps}
    for _ in range(epochs):
        for i in range(len(seeds)):
            for p in ps:
                runs[p][i].epoch()
    return Sweep(list(ps), {p: [r.history for r in rs] for p, rs in runs.items()}, seeds,
                 {p: rs[0].net for p, rs in runs.items()})


@dataclass
class Pitfall:
    """Val accuracy in eval mode (twice: it must not change) and left in train mode (a new mask per call)."""

    eval_acc: float
    eval_again: float
    train_mode: list[float]

    @property
    def train_mode_mean(self) -> float:
        return float(np.mean(self.train_mode))


def train_vs_eval(net: reference.NumpyNet, splits: Splits, repeats: int = 5, seed: int | None = None) -> Pitfall:
    """Evaluate ``net`` on the validation set in eval mode (deterministic) and in train mode (noisy, lower)."""
    repeats = check_int(repeats, "repeats", low=1)
    x, y = splits.x_val.numpy(), splits.y_val.numpy()
    rng = numpy_rng(seed, stream=34)
    accs = [net.evaluate(x, y, train=True, rng=rng)[1] for _ in range(repeats)]
    return Pitfall(net.evaluate(x, y)[1], net.evaluate(x, y)[1], accs)


# --------------------------------------------------------------------------------------------------
# Is dropout a waste of compute? (seed 002)
# --------------------------------------------------------------------------------------------------
@dataclass
class TargetRow:
    run: str
    epoch_s: float  # median seconds per epoch
    epochs: int | None  # epochs until val accuracy first reaches the target (None: never)
    best_val_acc: float

    @property
    def seconds(self) -> float | None:
        return None if self.epochs is None else self.epochs * self.epoch_s


@dataclass
class ComputeToTarget:
    """One seed: time per epoch, epochs to ``target`` val accuracy, and their product (compute to target), per run."""

    target: float
    rows: list[TargetRow]

    def table(self) -> str:
        lines = [f"target val accuracy: {self.target:.3f}",
                 f"{'run':<14} {'s/epoch':>8} {'epochs to target':>17} {'s to target':>12}"]
        for r in self.rows:
            e = "not reached" if r.epochs is None else str(r.epochs)
            s = "—" if r.seconds is None else f"{r.seconds:.2f}"
            lines.append(f"{r.run:<14} {r.epoch_s:>8.4f} {e:>17} {s:>12}")
        return "\n".join(lines)

    def get(self, run: str) -> TargetRow:
        return next(r for r in self.rows if r.run == run)


def epochs_to_target(h: History, target: float) -> int | None:
    """Epochs (1-based count) until val accuracy first reaches ``target``; None if never."""
    i = h.first_epoch_reaching("val_acc", target)
    return None if i is None else i + 1


def compute_to_target(runs: dict[str, History], target: float | None = None) -> ComputeToTarget:
    """For each named run: median seconds per epoch, epochs to ``target``, and their product. ``target``
    defaults to 98% of the first run's best val accuracy (a level that run reaches by construction)."""
    if target is None:
        target = 0.98 * next(iter(runs.values())).best("val_acc")[1]
    rows = [TargetRow(name, float(np.median(h.seconds)), epochs_to_target(h, target), h.best("val_acc")[1])
            for name, h in runs.items()]
    return ComputeToTarget(target, rows)


@dataclass
class PairedTarget:
    """Compute to target over paired seeds: per seed, the run without dropout and the run with drop rate ``p``
    (same seed), the target being 98% of that seed's no-dropout best. A run that never reaches its target is
    counted at all its epochs (``cap``): its ratio is then a lower bound (``censored`` counts them)."""

    p: float
    seeds: list[int]
    per_seed: list[ComputeToTarget]
    cap: int  # epochs of each run
    where: str = "numpy, CPU"

    def _pair(self, c: ComputeToTarget) -> tuple[TargetRow, TargetRow]:
        return c.rows[0], c.rows[1]

    @property
    def censored(self) -> int:
        return sum(c.rows[1].epochs is None for c in self.per_seed)

    def epochs_ratio(self) -> list[float]:
        """Per seed: epochs to target with dropout / without (a run that never reached it counted at ``cap``)."""
        return [(d.epochs or self.cap) / b.epochs for b, d in map(self._pair, self.per_seed)]

    def epoch_s_ratio(self) -> list[float]:
        """Per seed: seconds per epoch with dropout / without."""
        return [d.epoch_s / b.epoch_s for b, d in map(self._pair, self.per_seed)]

    def seconds_ratio(self) -> list[float]:
        """Per seed: seconds to target with dropout / without (epochs ratio × seconds-per-epoch ratio)."""
        return [e * s for e, s in zip(self.epochs_ratio(), self.epoch_s_ratio())]

    def table(self) -> str:
        lines = [f"compute to target ({self.where}); target = 98% of each seed's best val accuracy without dropout",
                 f"{'seed':>11} {'target':>7} {'epochs p=0':>11} {f'p={self.p:g}':>7} {'s/epoch p=0':>12} "
                 f"{f'p={self.p:g}':>7} {'time ratio':>11}"]
        for s, c, r in zip(self.seeds, self.per_seed, self.seconds_ratio()):
            b, d = self._pair(c)
            e = f">{self.cap}" if d.epochs is None else str(d.epochs)
            lines.append(f"{s:>11} {c.target:>7.3f} {b.epochs:>11} {e:>7} {b.epoch_s:>12.4f} {d.epoch_s:>7.4f} "
                         f"{r:>10.2f}x")
        return "\n".join(lines)


def paired_target(base: Sequence[History], drop: Sequence[History], p: float, seeds: Sequence[int],
                  where: str = "numpy, CPU") -> PairedTarget:
    """:class:`PairedTarget` from runs without dropout (``base``) and with drop rate ``p``, run i of both seed i."""
    per = [compute_to_target({"p=0": b, f"p={p:g}": d}) for b, d in zip(base, drop)]
    return PairedTarget(p, list(seeds), per, len(drop[0]), where)


def sweep_target(sweep: Sweep, p: float = 0.5) -> PairedTarget:
    """Compute to target of the sweep's runs at drop rate ``p`` against its runs without dropout."""
    p = check_p(p)
    if 0.0 not in sweep.histories or p not in sweep.histories or p == 0.0:
        raise BadArgument(f"p={p!r}: the sweep must hold runs at p = 0 and at p, and p > 0 (it has ps={sweep.ps})")
    return paired_target(sweep.histories[0.0], sweep.histories[p], p, sweep.seeds)


@dataclass
class LayerCost:
    """Median CPU seconds (numpy, one thread, interleaved rounds) for one activation of ``shape``: a plain copy, your
    dropout forward + backward, the next layer's matrix product on the dense activation and on the same one with
    dropped units, and a control: the product over only the kept half of the units (what skipping the dropped ones
    would cost). ``dropped_ratio`` / ``kept_ratio``: that product's time over the dense one's, per group of rounds;
    ``kept_units``: how many units the control's product runs over (``round(units * (1 - p))``)."""

    shape: tuple[int, int]
    copy: float
    dropout: float
    matmul_dense: float
    matmul_dropped: float
    matmul_kept: float = float("nan")
    dropped_ratio: list[float] = field(default_factory=list)
    kept_ratio: list[float] = field(default_factory=list)
    kept_units: int = 0

    def lines(self) -> str:
        rows = (("copy of the activation", self.copy), ("your dropout fwd+bwd", self.dropout),
                ("next matmul, dense input", self.matmul_dense), ("next matmul, units dropped", self.matmul_dropped),
                ("control: kept half only", self.matmul_kept))
        return "\n".join(f"  {k:<27} {v * 1e6:8.1f} µs  ({v / self.copy:5.1f}x a copy)" for k, v in rows)


def layer_cost(forward: Forward = reference.dropout_forward, backward: Backward = reference.dropout_backward,
               shape: tuple[int, int] = (BATCH, WIDTHS[0]), p: float = 0.5, repeats: int = 20,
               seed: int | None = None) -> LayerCost:
    """What one dropout layer costs, and what it does not save: ``h @ W`` takes as long with half of ``h``
    zeroed as without (a dense matrix product multiplies the zeros too), while a product over only the kept
    half of the units (as if whole units were dropped for the batch and skipped) takes about half as long.
    ``repeats`` groups of 3 interleaved rounds: each group gives one ratio (:func:`min_ratios`)."""
    shape, p, repeats = check_shape(shape), check_p(p), check_int(repeats, "repeats", low=1)
    if len(shape) != 2 or 0 in shape or p == 0.0:
        raise BadArgument(f"shape={shape!r}, p={p!r}: need a 2-d activation (batch, units) with both sizes > 0 and "
                          "p > 0 (at p = 0 nothing is dropped to compare)")
    rng = numpy_rng(seed, stream=35)
    h = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[1], shape[1])).astype(np.float32)
    dropped = forward(h, p, True, rng)[0]
    kept = np.sort(rng.permutation(shape[1])[: round(shape[1] * (1 - p))])
    h_kept, w_kept = np.ascontiguousarray(h[:, kept]), np.ascontiguousarray(w[kept])

    def fwd_bwd() -> None:
        out, cache = forward(h, p, True, rng)
        backward(out, cache)

    fns = {"copy": h.copy, "dropout": fwd_bwd, "dense": lambda: h @ w, "dropped": lambda: dropped @ w,
           "kept": lambda: h_kept @ w_kept}
    with threadpool_limits(BLAS_THREADS):
        t = cpu_rounds(fns, rounds=3 * repeats)
    med = {k: float(np.median(v)) for k, v in t.items()}
    return LayerCost(shape, med["copy"], med["dropout"], med["dense"], med["dropped"], med["kept"],
                     min_ratios(t["dropped"], t["dense"]), min_ratios(t["kept"], t["dense"]), len(kept))


# --------------------------------------------------------------------------------------------------
# PyTorch: the live panel's experiment (nn.Dropout), and the GPU if there is one
# --------------------------------------------------------------------------------------------------
def train_one(splits: Splits, p: float, *, epochs: int = EPOCHS, widths=WIDTHS, lr: float = LR,
              batch_size: int = BATCH, device: str = "cpu", callbacks=(), seed: int | None = None) -> History:
    """Build (seeded) and train the lesson's MLP in PyTorch with ``nn.Dropout(p)`` after each hidden layer."""
    seed = get_seed() if seed is None else seed
    seed_everything(seed)
    model = mlp(splits.n_features, list(widths), splits.n_classes, dropout=p)
    return fit(model, splits, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks,
               seed=seed, eval_train=True, config={"p": p, "widths": list(widths)})


def torch_target(splits: Splits, p: float = 0.5, *, device: str = "cpu", seeds: Sequence[int] | None = None,
                 epochs: int = EPOCHS, widths=WIDTHS) -> PairedTarget:
    """Compute to target in PyTorch (``nn.Dropout``) on ``device``: every seed's run without dropout and with ``p``,
    the seeds trained at once (:func:`lessons_lib.multiseed.fit_seeds`); seconds per epoch are the stacked run's
    time per seed (wall time, device synchronized)."""
    seeds = list(seeds) if seeds is not None else run_seeds()
    device, p = str(pick_device(device)), check_p(p)  # "cuda" without a GPU: DeviceUnavailableError

    def runs(q: float) -> list[History]:
        return [r.history for r in fit_seeds(lambda: mlp(splits.n_features, list(widths), splits.n_classes,
                                                         dropout=q), splits, seeds, epochs=epochs, lr=LR,
                                             batch_size=BATCH, device=device, eval_train=True)]

    return paired_target(runs(0.0), runs(p), p, seeds, where=f"PyTorch, {device}")


def gpu_compute_to_target(splits: Splits, p: float = 0.5, epochs: int = EPOCHS,
                          seeds: Sequence[int] | None = None) -> PairedTarget | None:
    """:func:`torch_target` on the GPU (CUDA or MPS), or None when there is none."""
    from ..device import available_devices

    gpus = [d for d in available_devices() if d != "cpu"]
    return torch_target(splits, p, device=gpus[0], seeds=seeds, epochs=epochs) if gpus else None


def experiment(*, device: str, callbacks: list, p: float = 0.5, epochs: int = 20, width: int = 256,
               n_train: int = N_TRAIN) -> History:
    """Panel experiment: the lesson's MLP in PyTorch (two hidden layers of ``width``, ``nn.Dropout(p)``),
    ``n_train`` mnist1d training signals (the size knob: raise it on a fast machine or a GPU)."""
    return train_one(lesson_splits(n_train), p, epochs=epochs, widths=(width, width), device=device,
                     callbacks=callbacks)


def make_panel():
    """The lesson's panel: p, width, training-set size, epochs; CPU / GPU."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "p": w.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.1, description="p (drop)", style=style),
        "width": w.SelectionSlider(options=[64, 128, 256, 512, 1024], value=256, description="width", style=style),
        "n_train": w.SelectionSlider(options=[250, 500, 1000, 2000, 3200], value=N_TRAIN, description="train size",
                                     style=style),
        "epochs": w.IntSlider(value=20, min=1, max=100, description="epochs", style=style),
    }
    return LivePanel(experiment, knobs, title="Dropout: an MLP on MNIST-1D (PyTorch, nn.Dropout)")


# --------------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------------
OVERFIT_GAP = 0.1  # "far above": a train − val gap of more than 10 points
TWICE = (1.5, 2.5)  # "about twice the epochs"
SAME_COST = (0.9, 1.1)  # "takes as long": within ±10%
CONTROL_FASTER = 0.8  # the control (kept half only) must be clearly faster, or the timer cannot tell


def _wastes(c: Claims, t: PairedTarget | None, device: str, source: str) -> None:
    claim = (f"'Dropout wastes compute', on this {device}: reaching the same val accuracy takes more {device} time "
             "with dropout (p=0.5) than without")
    if t is None:
        c.add(claim, source, f"no {device} on this machine", None)
        return
    r = mean_interval(t.seconds_ratio())
    v = verdict(r, 1.0)
    if t.censored and v == DOES_NOT_HOLD:  # a censored ratio is a lower bound: "less" is not shown
        v = INCONCLUSIVE
    c.add(claim, source, f"time to target with / without dropout, per seed ({t.where}): {r.format('.2f', unit='x')}"
          f"; {t.censored} of {len(t.seeds)} runs with dropout never reached it (counted at {t.cap} epochs)", v)


def claims(sweep: Sweep, target: PairedTarget, cost: LayerCost, gpu: PairedTarget | None = None) -> Claims:
    """The lesson's claims from the paired sweep, its compute to target and the layer cost; each number noise can
    move has its interval over seeds (or timing rounds) and a three-valued verdict."""
    c = Claims("03 dropout")
    p = target.p
    gap0, gapp = sweep.values(0.0, "gap"), sweep.values(p, "gap")
    i = mean_interval(gap0)
    c.add(f"Without regularization the network overfits: train accuracy far above val accuracy (gap > "
          f"{OVERFIT_GAP:g})", "seed 002 (over-fitting); seed 004", f"train − val gap at p=0: {i.format()}",
          verdict(i, OVERFIT_GAP))
    d = paired_interval(gap0, gapp)
    c.add(f"Dropout (p={p:g}) shrinks the train/val gap", "seed 002 ('NO' half); seed 004",
          f"gap without − gap with dropout, paired: {d.format()}", verdict(d, 0.0))
    d = paired_interval(sweep.values(p, "best_val_acc"), sweep.values(0.0, "best_val_acc"))
    c.add(f"Dropout (p={p:g}) improves the best val accuracy", "seed 002 ('NO': it is needed)",
          f"best val acc with − without dropout, paired: {d.format('.1f', scale=100, unit=' pts')}", verdict(d, 0.0))
    _wastes(c, target, "CPU", "seed 002 ('YES' half; the post says GPU)")
    r = mean_interval(target.epoch_s_ratio())
    c.add(f"An epoch with dropout (p={p:g}) takes more time than one without, on this CPU", "seed 002 ('YES' half)",
          f"seconds per epoch with / without, per seed: {r.format('.2f', unit='x')}", verdict(r, 1.0))
    r = mean_interval(target.epochs_ratio())
    v = within(r, *TWICE)
    if target.censored and r.high < TWICE[0]:  # censored ratios are lower bounds
        v = INCONCLUSIVE
    c.add(f"'The GPU has to work twice as hard': at p={p:g} about twice the epochs ({TWICE[0]:g}x–{TWICE[1]:g}x) to "
          "the same val accuracy (an epoch count, the same on any device)", "seed 002",
          f"epochs to target with / without, per seed: {r.format('.2f', unit='x')}", v)
    r, k = mean_interval(cost.dropped_ratio), mean_interval(cost.kept_ratio)
    v = within(r, *SAME_COST) if verdict(k, CONTROL_FASTER, "below") == HOLDS else INCONCLUSIVE
    c.add(f"On this CPU, the dropped units are still computed: the next dense matrix product takes as long as "
          f"without dropout (within ±{SAME_COST[1] - 1:.0%}; numpy, one thread)", "seed 002 ('waste'); lesson",
          f"time with units dropped / dense: {r.format('.3f', unit='x')}; control, the kept half only: "
          f"{k.format('.2f', unit='x')}", v)
    _wastes(c, gpu, "GPU", "seed 002")
    return c
