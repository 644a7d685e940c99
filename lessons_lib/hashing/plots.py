"""Lesson 09's figures: SimHash collision rates against the theory, and the accuracy-vs-work sweep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lab import CollisionRates, RunResult

COLORS = {"lsh": "#1f77b4", "random": "#d62728", "topk": "#2ca02c", "dense": "#555555", "dropout": "#9467bd"}


def plot_collisions(rates: CollisionRates):
    """Measured per-bit collision rate vs the theory 1 - θ/π, and the measured same-bucket rate of one K-bit
    table vs (1 - θ/π)^K."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    deg = np.degrees(rates.angles)
    th = np.linspace(0, np.pi, 200)
    K = rates.K
    ax[0].plot(np.degrees(th), 1 - th / np.pi, color="#999", label="theory 1 - θ/π")
    ax[0].plot(deg, rates.per_bit, "o", ms=4, color=COLORS["lsh"], label=f"measured ({rates.bits:,} bits per angle)")
    ax[0].set(xlabel="angle between the vectors (degrees)", ylabel="P(one bit agrees)", title="one SimHash bit")
    ax[1].plot(np.degrees(th), (1 - th / np.pi) ** K, color="#999", label=f"theory (1 - θ/π)^{K}")
    ax[1].plot(deg, rates.per_bucket, "o", ms=4, color=COLORS["lsh"],
               label=f"measured ({rates.codes:,} codes per angle)")
    ax[1].set(xlabel="angle between the vectors (degrees)", ylabel="P(same bucket)", title=f"one table of K={K} bits")
    for a in ax:
        a.legend(frameon=False, fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_sweep(rows: Sequence[RunResult]):
    """Test accuracy vs active fraction per method (dense as a line, one-fraction baselines as markers), and
    the hidden layer's multiplications (hashing counted) vs fraction."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    dense = [r for r in rows if r.method == "dense"]
    for m in dict.fromkeys(r.method for r in rows if r.method != "dense"):
        rs = sorted((r for r in rows if r.method == m), key=lambda r: r.active_fraction)
        fr = [100 * r.active_fraction for r in rs]
        style = "o-" if len(rs) > 1 else "*"
        ms = 6 if len(rs) > 1 else 13
        ax[0].plot(fr, [r.test_acc for r in rs], style, ms=ms, color=COLORS.get(m), label=m)
        note = {"lsh": " (hashing counted)", "topk": " (selection counted)"}.get(m, "")
        ax[1].plot(fr, [100 * r.mults.total for r in rs], style, ms=ms, color=COLORS.get(m), label=m + note)
        if m == "lsh":
            ax[1].plot(fr, [100 * r.mults.layer for r in rs], "s:", ms=4, color=COLORS[m], alpha=0.6,
                       label="lsh (layer only, = random)")
    if dense:
        ax[0].axhline(dense[0].test_acc, color=COLORS["dense"], ls="--", label="dense")
        ax[1].axhline(100, color=COLORS["dense"], ls="--", label="dense (and dropout)")
    ax[0].axhline(0.1, color="#bbb", ls=":", label="chance")
    ax[0].set(xscale="log", xlabel="active hidden units (%)", ylabel="test accuracy", ylim=(0, None),
              title="accuracy vs active fraction")
    ax[1].set(xscale="log", yscale="log", ylim=(0.5, 150), xlabel="active hidden units (%)",
              ylabel="% of dense multiplications",
              title="hidden-layer multiplications, training")
    for a in ax:
        a.xaxis.set_major_locator(FixedLocator([2, 5, 10, 25]))
        a.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        a.xaxis.set_minor_locator(NullLocator())
        a.xaxis.set_minor_formatter(NullFormatter())
        a.grid(alpha=0.3)
    ax[1].yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 25, 50, 100]))
    ax[1].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax[1].yaxis.set_minor_formatter(NullFormatter())
    ax[0].legend(frameon=False, fontsize=8, loc="lower right", ncol=2)
    ax[1].legend(frameon=False, fontsize=7.5, loc="lower right")
    fig.tight_layout()
    return fig
