"""Lesson 03, dropout: the experiments, the live panel and the claims table.

The from-scratch part runs on whichever ``dropout_forward`` / ``dropout_backward`` pair the notebook hands in (the
learner's once they pass their checks, else :mod:`lessons_lib.dropout.reference`): the reference's numpy MLP with
that dropout after each hidden layer, its gradient check, the sweep of drop rates (overfitting and the train/val
gap), the train/eval pitfall and the cost measurements. Figures: :mod:`lessons_lib.dropout.plots`.
The live panel trains the same MLP in PyTorch with ``nn.Dropout``, on the CPU or a GPU.
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
from ..gradcheck import numerical_gradient
from ..history import History
from ..models import mlp
from ..seeds import get_seed, numpy_rng, seed_everything
from ..timing import time_interleaved
from ..training import fit
from . import reference

Forward = Callable[..., tuple]  # dropout_forward(x, p, train, rng) -> (out, cache)
Backward = Callable[[np.ndarray, tuple], np.ndarray]  # dropout_backward(dout, cache) -> dx

WIDTHS = (256, 256)
N_TRAIN = 1000  # a small training set: overfitting (and what dropout does about it) shows within seconds
EPOCHS = 40
LR = 2e-3
BATCH = 128
BLAS_THREADS = 1  # numpy's BLAS on one thread: small matrices, and stable timings on a shared machine


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
# The sweep of drop rates, and the train/eval pitfall
# --------------------------------------------------------------------------------------------------
class NumpyRun:
    """One training run of a :class:`reference.NumpyNet` with dropout ``p``, advanced an epoch at a time (so that
    several runs can be timed round-robin). Per epoch the history records the training seconds (evaluation
    excluded), and loss and accuracy on the whole training set (in eval mode) and on the validation set."""

    def __init__(self, splits: Splits, p: float, forward: Forward = reference.dropout_forward,
                 backward: Backward = reference.dropout_backward, *, widths=WIDTHS, batch_size: int = BATCH,
                 seed: int | None = None):
        self.x, self.y, self.xv, self.yv = (a.numpy() for a in (splits.x_train, splits.y_train, splits.x_val,
                                                                 splits.y_val))
        self.net = reference.NumpyNet([self.x.shape[1], *widths, splits.n_classes], p, forward, backward, seed=seed)
        self.history = History(config={"p": p, "impl": "numpy"}, device="cpu")
        self.batch_size = batch_size

    def epoch(self) -> None:
        n, net, h = len(self.x), self.net, self.history
        with threadpool_limits(BLAS_THREADS):
            t0 = time.perf_counter()
            order = net.shuffle_rng.permutation(n)
            for i in range(0, n, self.batch_size):
                net.train_step(self.x[order[i:i + self.batch_size]], self.y[order[i:i + self.batch_size]])
            secs = time.perf_counter() - t0
            (tl, ta), (vl, va) = net.evaluate(self.x, self.y), net.evaluate(self.xv, self.yv)
        steps = math.ceil(n / self.batch_size)
        h.append({"epoch": len(h), "train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va,
                  "seconds": secs, "samples_per_s": n / secs, "step_seconds": secs / steps})
        h.steps += steps


@dataclass
class SweepRow:
    p: float
    train_acc: float
    val_acc: float
    best_val_acc: float
    gap: float  # train_acc - val_acc, last epoch
    epoch_s: float  # median training seconds per epoch


@dataclass
class Sweep:
    """One numpy run per dropout rate (same data, seed and epochs): histories and trained nets."""

    ps: list[float]
    histories: dict[float, History]
    nets: dict[float, reference.NumpyNet] = field(default_factory=dict)

    def rows(self) -> list[SweepRow]:
        return [self.row(p) for p in self.ps]

    def row(self, p: float) -> SweepRow:
        h = self.histories[p]
        return SweepRow(p, h.train_acc[-1], h.val_acc[-1], h.best("val_acc")[1], h.train_acc[-1] - h.val_acc[-1],
                        float(np.median(h.seconds)))

    def table(self) -> str:
        lines = [f"{'p':>5} {'train acc':>10} {'val acc':>8} {'best val':>9} {'gap':>7} {'s/epoch':>8}"]
        lines += [f"{r.p:>5.2f} {r.train_acc:>10.3f} {r.val_acc:>8.3f} {r.best_val_acc:>9.3f} {r.gap:>7.3f} "
                  f"{r.epoch_s:>8.4f}" for r in self.rows()]
        return "\n".join(lines)


def dropout_sweep(forward: Forward = reference.dropout_forward, backward: Backward = reference.dropout_backward,
                  ps: Sequence[float] = (0.0, 0.2, 0.5), *, epochs: int = EPOCHS, splits: Splits | None = None,
                  seed: int | None = None) -> Sweep:
    """Train the numpy MLP once per dropout rate in ``ps`` with the given dropout pair. The runs take turns, an
    epoch each, so that a change of load on a shared machine hits every run alike (fair seconds per epoch)."""
    splits = splits if splits is not None else lesson_splits(seed=seed)
    runs = {p: NumpyRun(splits, p, forward, backward, seed=seed) for p in ps}
    for _ in range(epochs):
        for run in runs.values():
            run.epoch()
    return Sweep(list(ps), {p: r.history for p, r in runs.items()}, {p: r.net for p, r in runs.items()})


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
    """Time per epoch, epochs to ``target`` val accuracy, and their product (compute to target), per run."""

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
class LayerCost:
    """Seconds (the fastest of interleaved rounds), numpy, one activation of ``shape``: a plain copy, your dropout
    forward + backward, and the next layer's matrix product on the dense activation and on the one with dropped
    units."""

    shape: tuple[int, int]
    copy: float
    dropout: float
    matmul_dense: float
    matmul_dropped: float

    def lines(self) -> str:
        rows = (("copy of the activation", self.copy), ("your dropout fwd+bwd", self.dropout),
                ("next matmul, dense input", self.matmul_dense), ("next matmul, units dropped", self.matmul_dropped))
        return "\n".join(f"  {k:<27} {v * 1e6:8.1f} µs  ({v / self.copy:5.1f}x a copy)" for k, v in rows)


def layer_cost(forward: Forward = reference.dropout_forward, backward: Backward = reference.dropout_backward,
               shape: tuple[int, int] = (BATCH, WIDTHS[0]), p: float = 0.5, repeats: int = 25,
               seed: int | None = None) -> LayerCost:
    """What one dropout layer costs, and what it does not save: ``h @ W`` takes as long with half of ``h``
    zeroed as without (a dense matrix product multiplies the zeros too)."""
    rng = numpy_rng(seed, stream=35)
    h = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[1], shape[1])).astype(np.float32)
    dropped = forward(h, p, True, rng)[0]

    def fwd_bwd() -> None:
        out, cache = forward(h, p, True, rng)
        backward(out, cache)

    fns = {"copy": h.copy, "dropout": fwd_bwd, "dense": lambda: h @ w, "dropped": lambda: dropped @ w}
    with threadpool_limits(BLAS_THREADS):  # pure compute: only interference adds time, so the fastest round counts
        t = {k: v.min for k, v in time_interleaved(fns, rounds=repeats, warmup=3).items()}
    return LayerCost(shape, t["copy"], t["dropout"], t["dense"], t["dropped"])


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


def gpu_compute_to_target(splits: Splits, p: float = 0.5, epochs: int = EPOCHS) -> ComputeToTarget | None:
    """The compute-to-target comparison in PyTorch on the GPU (CUDA or MPS), or None when there is none."""
    from ..device import available_devices

    gpus = [d for d in available_devices() if d != "cpu"]
    if not gpus:
        return None
    return compute_to_target({f"{gpus[0]} p=0": train_one(splits, 0.0, epochs=epochs, device=gpus[0]),
                              f"{gpus[0]} p={p:g}": train_one(splits, p, epochs=epochs, device=gpus[0])})


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
def claims(sweep: Sweep, ctt: ComputeToTarget, p_drop: float, cost: LayerCost,
           gpu_ctt: ComputeToTarget | None = None) -> Claims:
    """The lesson's claims table from the sweep, the compute-to-target table and the layer cost."""
    c = Claims("03 dropout")
    r0, rp = sweep.row(0.0), sweep.row(p_drop)
    c.add("Without regularization the network overfits: train accuracy far above val accuracy",
          "002 (over-fitting), 004", f"train-val gap {r0.gap:.3f} at p=0 (train {r0.train_acc:.3f})", r0.gap > 0.1)
    c.add(f"Dropout (p={p_drop:g}) shrinks the train/val gap", "002 ('NO' half), 004",
          f"gap {r0.gap:.3f} → {rp.gap:.3f}", rp.gap < r0.gap)
    c.add(f"Dropout (p={p_drop:g}) improves the best val accuracy", "002 ('NO': it is needed)",
          f"best val acc {r0.best_val_acc:.3f} → {rp.best_val_acc:.3f}", rp.best_val_acc > r0.best_val_acc)
    t0, tp = ctt.rows[0], ctt.rows[1]
    if t0.seconds is not None and tp.seconds is not None:
        c.add(f"'Dropout wastes compute': reaching the same val accuracy ({ctt.target:.3f}) costs more with it",
              "002 ('YES' half), CPU", f"{tp.seconds:.2f} s vs {t0.seconds:.2f} s to target "
              f"({tp.seconds / t0.seconds:.2f}x; {tp.epochs} vs {t0.epochs} epochs)", tp.seconds > t0.seconds)
    else:
        c.add("'Dropout wastes compute': reaching the same val accuracy costs more with it", "002, CPU",
              "a run did not reach the target", tp.seconds is None)
    c.add("An epoch with dropout costs more time than one without (CPU)", "002 ('YES' half)",
          f"{rp.epoch_s / r0.epoch_s:.2f}x the no-dropout epoch", rp.epoch_s > r0.epoch_s)
    ratio = tp.epochs / t0.epochs if tp.epochs and t0.epochs else float("nan")
    c.add("'The GPU has to work twice as hard' (p = 0.5: about 2x the epochs to the same accuracy)", "002",
          f"{ratio:.2f}x the epochs", None if math.isnan(ratio) else 1.5 <= ratio <= 2.5)
    r = cost.matmul_dropped / cost.matmul_dense
    c.add("The dropped units are still computed: the next (dense) matrix product costs as much as without dropout",
          "002 ('waste')", f"{r:.2f}x the time of the product on the dense activation", 0.8 <= r <= 1.25)
    if gpu_ctt is None:
        c.add("The same on a GPU", "002", "no GPU on this machine", None)
    else:
        g0, gp = gpu_ctt.rows[0], gpu_ctt.rows[1]
        ok = g0.seconds is not None and gp.seconds is not None
        c.add("The same on a GPU: reaching the target costs more with dropout", "002, GPU",
              f"{gp.seconds:.2f} s vs {g0.seconds:.2f} s" if ok else "a run did not reach the target",
              (gp.seconds > g0.seconds) if ok else None)
    return c
