"""Lesson 03's figures."""

from __future__ import annotations

import numpy as np

from ..stats import mean_interval
from .lab import Sweep


def plot_sweep(sweep: Sweep, path: str | None = None):
    """Left: train (dashed) and val (solid) accuracy per epoch, one colour per dropout rate: the mean over the
    seeds, the band their range. Right: per seed, dropout's effect on the gap and on the best val accuracy
    (p = max(ps) minus p = 0, paired by seed; dots are seeds, the bar the mean and its 95% interval)."""
    import matplotlib.pyplot as plt

    n = len(sweep.seeds) or len(sweep.histories[sweep.ps[0]])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2.3, 1]})
    for i, p in enumerate(sweep.ps):
        hs = sweep.histories[p]
        epochs = np.arange(1, len(hs[0]) + 1)
        for metric, style, label in (("train_acc", "--", "train"), ("val_acc", "-", "val")):
            runs = np.array([getattr(h, metric) for h in hs])
            ax.plot(epochs, runs.mean(0), style, color=f"C{i}", label=f"p={p:g} {label}")
            ax.fill_between(epochs, runs.min(0), runs.max(0), color=f"C{i}", alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"numpy MLP with dropout: mean of {n} seeds, band = their range")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(ncol=len(sweep.ps), fontsize=8, loc="lower right")

    p = max(sweep.ps)
    diffs = {"gap": np.subtract(sweep.values(p, "gap"), sweep.values(0.0, "gap")),
             "best val acc": np.subtract(sweep.values(p, "best_val_acc"), sweep.values(0.0, "best_val_acc"))}
    for j, d in enumerate(diffs.values()):
        bx.plot(np.full(len(d), j) + np.linspace(-0.12, 0.12, len(d)), d, "o", color="0.5", ms=4)
        if len(d) >= 2:
            ci = mean_interval(d)
            bx.errorbar(j + 0.3, ci.mean, yerr=ci.half_width, fmt="s", color="k", capsize=4)
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xticks(range(len(diffs)), list(diffs))
    bx.set_xlim(-0.5, len(diffs) - 0.3)
    bx.set_ylabel(f"p={p:g} minus p=0, same seed")
    bx.set_title("paired: dots = seeds,\nsquare = mean ± 95% interval", fontsize=10)
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)
    return fig
