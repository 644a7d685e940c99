"""Lesson 03's figures."""

from __future__ import annotations

import numpy as np

from .lab import Sweep


def plot_sweep(sweep: Sweep, path: str | None = None):
    """Train (dashed) and val (solid) accuracy per epoch, one colour per dropout rate; returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, p in enumerate(sweep.ps):
        h = sweep.histories[p]
        ax.plot(np.array(h.epoch) + 1, h.train_acc, "--", color=f"C{i}", label=f"p={p:g} train")
        ax.plot(np.array(h.epoch) + 1, h.val_acc, "-", color=f"C{i}", label=f"p={p:g} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("mnist1d, numpy MLP with dropout: the train/val gap")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(ncol=len(sweep.ps), fontsize=8, loc="lower right")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)
    return fig
