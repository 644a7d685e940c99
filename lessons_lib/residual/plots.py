"""Lesson 06's figures (matplotlib), one per measurement of :mod:`.lab`."""

from __future__ import annotations

import numpy as np

from .lab import BlockRuns, DeadLayer, DepthSweep, GradNormRecorder


def plot_depth_sweep(sw: DepthSweep):
    """Left: final val accuracy against depth, plain vs residual. Right: val-accuracy curves of every run."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6))
    layers = [2 * d + 2 for d in sw.depths]
    a.plot(layers, sw.final_acc(False), "s--", color="#d62728", label="plain")
    a.plot(layers, sw.final_acc(True), "o-", color="#1f77b4", label="residual")
    a.set(xscale="log", xlabel="depth (Linear layers)", ylabel="final val accuracy", ylim=(0, 1.02),
          title="Same budget, growing depth")
    a.set_xticks(layers, [str(v) for v in layers])
    a.minorticks_off()
    cmap = plt.get_cmap("viridis")
    for k, d in enumerate(sw.depths):
        col = cmap(k / max(len(sw.depths) - 1, 1))
        for r, ls in ((True, "-"), (False, "--")):
            h = sw.histories[(r, d)]
            b.plot([e + 1 for e in h.epoch], h.val_acc, ls, color=col,
                   label=f"{2 * d + 2} layers, {'residual' if r else 'plain'}")
    b.set(xlabel="epoch", ylabel="val accuracy", ylim=(0, 1.02), title="Learning curves (solid: residual)")
    b.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
    """Gradient norm per layer (input side on the left) at initialization and after epochs of training, for the
    plain and the residual net of depth ``n_blocks`` (default: the deepest)."""
    import matplotlib.pyplot as plt

    d = max(sw.depths) if n_blocks is None else n_blocks
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, r in zip(axes, (False, True)):
        _draw_recorder(ax, sw.recorder(r, d), f"{'residual' if r else 'plain'}, {2 * d + 2} Linear layers")
    axes[0].set_ylabel("‖dLoss/dW‖ of the layer")
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


def plot_basicblock(runs: BlockRuns):
    """Val accuracy and train loss per epoch of the small ResNet with and without shortcuts."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, h, col, ls in (("residual", runs.residual, "#1f77b4", "-"), ("plain", runs.plain, "#d62728", "--")):
        ep = [e + 1 for e in h.epoch]
        a.plot(ep, h.val_acc, ls, color=col, marker="o", ms=3, label=name)
        b.plot(ep, h.train_loss, ls, color=col, marker="o", ms=3, label=name)
    a.set(xlabel="epoch", ylabel="val accuracy", title="Small ResNet on 8x8 digits", ylim=(0, 1.02))
    b.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Training loss")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
