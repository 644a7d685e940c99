"""Lesson 06's figures (matplotlib), one per measurement of :mod:`.lab`. Measurements repeated over runs are drawn
as their mean with a 95% interval (error bars or a band) and say how many runs they summarize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..stats import column_intervals
from .lab import LABELS, BlockRuns, DeadLayer, DeadTraining, Degradation, DepthSweep, GradNormRecorder

COLORS = {"plain": "#d62728", "plain_he": "#ff7f0e", "residual": "#1f77b4"}
FMT = {"plain": "s--", "plain_he": "^-.", "residual": "o-"}


def _curve(ax, x: Sequence[float], rows: np.ndarray, color: str, label: str, fmt: str = "-", log: bool = False):
    """Mean curve with its 95% band (``log``: of log10 values, i.e. a geometric mean)."""
    rows = np.asarray(rows, dtype=float)
    mean, low, high = column_intervals(np.log10(rows) if log else rows)
    if log:
        mean, low, high = 10**mean, 10**low, 10**high
    ax.plot(x, mean, fmt, color=color, ms=4, label=label)
    ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)


def _finish_epochs(fig, *axes):
    """Integer epochs on the x axis, a grid and a legend on each of ``axes``; a tight layout."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_depth_sweep(sw: DepthSweep):
    """Final training loss (left, log scale) and val accuracy (right) against depth, every treatment: mean and 95%
    interval over the runs (error bars)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    layers = [2 * d + 2 for d in sw.depths]
    for t in sw.treatments:
        for ax, metric, log in ((a, "train_loss", True), (b, "val_acc", False)):
            rows = np.array([sw.final(metric, t, d) for d in sw.depths]).T
            mean, low, high = column_intervals(np.log10(rows) if log else rows)
            if log:
                mean, low, high = 10**mean, 10**low, 10**high
            ax.errorbar(layers, mean, yerr=[mean - low, high - mean], fmt=FMT[t], color=COLORS[t], capsize=3, ms=5,
                        label=LABELS[t])
    a.set(yscale="log", ylabel="training loss after the last epoch", title="Training loss (geometric mean, 95% CI)")
    b.set(ylabel="val accuracy after the last epoch", ylim=(0, 1.02), title="Validation accuracy (95% CI)")
    for ax in (a, b):
        ax.set(xscale="log", xlabel="depth (Linear layers)")
        ax.set_xticks(layers, [str(v) for v in layers])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    fig.suptitle(f"Same budget ({sw.epochs} epochs, SGD lr {sw.lr:g}), growing depth: {len(sw.seeds)} runs each",
                 fontsize=10)
    fig.tight_layout()
    fig.legend(*a.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=3, fontsize=8)
    return fig


def plot_degradation(deg: Degradation, sw: DepthSweep):
    """Training loss per epoch (geometric mean, 95% band): the He-initialized plain net, shallow and deep, each at
    its best learning rate, and the deep residual net of the sweep."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for d, color, fmt in ((deg.shallow, "#ffbb78", "^-"), (deg.deep, "#ff7f0e", "^-.")):
        lr = deg.best_lr(d)
        rows = np.array([h.train_loss for h in deg.histories[(d, lr)]])
        _curve(ax, np.arange(1, rows.shape[1] + 1), rows, color, f"plain, He init, {2 * d + 2} layers (lr {lr:g})",
               fmt, log=True)
    rows = np.array([h.train_loss for h in sw.histories[("residual", deg.deep)]])
    _curve(ax, np.arange(1, rows.shape[1] + 1), rows, COLORS["residual"],
           f"residual, {2 * deg.deep + 2} layers (lr {sw.lr:g})", "o-", log=True)
    ax.set(yscale="log", xlabel="epoch", ylabel="training loss (eval mode)",
           title=f"Degradation: deeper plain trains worse ({len(sw.seeds)} runs, 95% band)")
    return _finish_epochs(fig, ax)


def _draw_recorder(ax, rec: GradNormRecorder, title: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    idx = np.arange(1, len(rec.layer_names) + 1)
    if rec.at_init is not None:
        ax.plot(idx, np.maximum(rec.at_init, 1e-30), "o-", ms=3, color="#7f7f7f", label="at initialization")
    cmap = plt.get_cmap("viridis")
    n = len(rec.after_epoch)
    for e, v in enumerate(rec.after_epoch):
        if e in (0, n // 2, n - 1):
            ax.plot(idx, np.maximum(v, 1e-30), "-", color=cmap(e / max(n - 1, 1)), label=f"after epoch {e + 1}")
    ax.set(yscale="log", xlabel="layer (1 = input side)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_recorder(rec: GradNormRecorder, title: str = "gradient norm per layer"):
    """One :class:`~.lab.GradNormRecorder` (e.g. ``history.config["grad_norms"]`` of a panel run) as a figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    _draw_recorder(ax, rec, title)
    ax.set_ylabel("‖dLoss/dW‖ of the layer")
    fig.tight_layout()
    return fig


def plot_grad_norms(sw: DepthSweep, n_blocks: int | None = None):
    """Gradient norm per layer (input side on the left) at initialization and after training, every treatment of
    depth ``n_blocks`` (default: the deepest): geometric mean over the runs with a 95% band."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    d = sw.deepest if n_blocks is None else n_blocks
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, when in zip(axes, ("init", "final")):
        for t in sw.treatments:
            rows = np.maximum(sw.norms(t, d, when), 1e-30)
            _curve(ax, np.arange(1, rows.shape[1] + 1), rows, COLORS[t], LABELS[t], FMT[t], log=True)
        ax.set(yscale="log", xlabel="layer (1 = input side)",
               title=f"{2 * d + 2} Linear layers, {'at initialization' if when == 'init' else 'after training'}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"‖dLoss/dW‖ ({len(sw.seeds)} runs, 95% band)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_dead_layer(dl: DeadLayer):
    """Gradient norm per layer with one dead layer, plain vs residual (exact zeros drawn on the floor line)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.8))
    idx = np.arange(1, len(dl.layer_names) + 1)
    floor = 1e-12
    ax.plot(idx, np.where(dl.plain_alive > 0, dl.plain_alive, floor), ":", color="#7f7f7f", lw=1.5,
            label="plain, no dead layer (reference)")
    for v, lab, fmt, col in ((dl.plain, "plain, dead layer", "s--", "#d62728"),
                             (dl.residual, "residual, dead layer", "o-", "#1f77b4")):
        ax.plot(idx, np.where(v > 0, v, floor), fmt, color=col, label=lab)
    ax.axvspan(dl.block_start + 0.5, dl.dead_layer + 1.5, color="#ffdd99", alpha=0.5, lw=0,
               label="the dead block (its layer2 = 0)")
    ax.axhline(floor, color="gray", lw=0.8)
    ax.text(0.8, floor * 2.5, "exactly 0", color="gray", fontsize=8)
    ax.set(yscale="log", xlabel="layer (1 = input side)", ylabel="‖dLoss/dW‖", xticks=idx,
           title="One backward pass with a dead layer: does the gradient reach the early layers?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_dead_training(dt: DeadTraining):
    """Left: the dead layer's weight norm before training and after each epoch (exact zeros on the floor line).
    Right: val accuracy per epoch. Plain vs residual, mean with a 95% band over the runs."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    floor = 1e-6
    for kind, color, fmt in (("plain", COLORS["plain"], "s--"), ("residual", COLORS["residual"], "o-")):
        w = dt.weight_norm[kind]
        _curve(a, np.arange(w.shape[1]), np.maximum(w, floor), color, f"{kind} (largest: {w.max():.3g})", fmt,
               log=True)
        rows = np.array([h.val_acc for h in dt.histories[kind]])
        _curve(b, np.arange(1, rows.shape[1] + 1), rows, color, kind, fmt)
    a.axhline(floor, color="gray", lw=0.8)
    a.text(0.05, floor * 2, "exactly 0", color="gray", fontsize=8)
    a.set(yscale="log", xlabel="epoch (0 = start)", ylabel="‖W‖ of the dead layer",
          title=f"Does the dead layer come back? ({len(dt.seeds)} runs)")
    b.set(xlabel="epoch", ylabel="val accuracy", ylim=(0, 1.02), title="The network with a dead layer")
    return _finish_epochs(fig, a, b)


def plot_basicblock(runs: BlockRuns):
    """Val accuracy and train loss per epoch of the small ResNet with and without shortcuts (mean, 95% band)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, hs, col, ls in (("residual", runs.residual, "#1f77b4", "o-"), ("plain", runs.plain, "#d62728", "s--")):
        ep = np.arange(1, len(hs[0]) + 1)
        _curve(a, ep, np.array([h.val_acc for h in hs]), col, name, ls)
        _curve(b, ep, np.array([h.train_loss for h in hs]), col, name, ls, log=True)
    a.set(xlabel="epoch", ylabel="val accuracy", title=f"Small ResNet on 8x8 digits ({len(runs.residual)} runs)",
          ylim=(0, 1.02))
    b.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Training loss (95% band)")
    return _finish_epochs(fig, a, b)
