"""Lesson 09's figures: SimHash collision rates against the theory, and the accuracy-vs-work sweep."""

from __future__ import annotations

import numpy as np

from .lab import CollisionRates, Sweep, _mean_half

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


def plot_sweep(sweep: Sweep):
    """Test accuracy vs active fraction per method, mean with 95% error bars over the sweep's seeds (dense as a line
    with its interval as a band, one-fraction baselines as markers), and the hidden layer's multiplications
    (hashing counted: a count, the same for every seed) vs fraction."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    n = len(sweep.seeds)
    for m in sweep.methods():
        if m == "dense":
            continue
        fr = sweep.fractions(m)
        x = [100 * f for f in fr]
        acc = [_mean_half([r.test_acc for r in sweep.runs(m, f)]) for f in fr]
        style, ms = ("o-", 5) if len(fr) > 1 else ("*", 12)
        ax[0].errorbar(x, [a for a, _ in acc], yerr=[h for _, h in acc], fmt=style, ms=ms, capsize=3,
                       color=COLORS.get(m), label=m)
        note = {"lsh": " (hashing counted)", "topk": " (selection counted)"}.get(m, "")
        ax[1].plot(x, [100 * sweep.first(m, f).mults.total for f in fr], style, ms=ms, color=COLORS.get(m),
                   label=m + note)
        if m == "lsh":
            ax[1].plot(x, [100 * sweep.first(m, f).mults.layer for f in fr], "s:", ms=4, color=COLORS[m], alpha=0.8,
                       label="lsh (layer only, = random)", zorder=3)
    if "dense" in sweep.methods():
        d, h = _mean_half([r.test_acc for r in sweep.runs("dense")])
        ax[0].axhline(d, color=COLORS["dense"], ls="--", label="dense")
        ax[0].axhspan(d - h, d + h, color=COLORS["dense"], alpha=0.15, lw=0, label="dense 95% CI")
        ax[1].axhline(100, color=COLORS["dense"], ls="--", label="dense (and dropout)")
    ax[0].axhline(0.1, color="#bbb", ls=":", label="chance")
    ax[0].set(xscale="log", xlabel="active hidden units (%)", ylabel="test accuracy", ylim=(0, None),
              title=f"accuracy: mean and 95% CI over {n} seed{'s' if n > 1 else ''}")
    ax[1].set(xscale="log", yscale="log", ylim=(0.5, 150), xlabel="active hidden units (%)",
              ylabel="% of dense multiplications",
              title="hidden-layer multiplications, training")
    ticks = sorted({100 * f for m in sweep.methods() for f in sweep.fractions(m) if m != "dense"})
    for a in ax:
        a.xaxis.set_major_locator(FixedLocator(ticks))
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


def plot_paper(comp):
    """The paper's regime (:class:`~lessons_lib.hashing.paper_regime.PaperComparison`): validation accuracy after
    each epoch per method (mean over the seeds, 95% band) — has dense converged? — and test accuracy against the
    hidden layer's multiplications per training example (hashing and rebuilds counted), with 95% error bars."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    from ..stats import column_intervals, mean_interval

    colors = {**COLORS, "narrow": "#ff7f0e"}
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in ("dense", "narrow", "topk", "lsh", "random"):
        runs = comp.of(m)
        if not runs:
            continue
        label = f"{m} ({runs[0].k} units)" if m != "dense" else f"dense ({runs[0].width})"
        mean, low, high = column_intervals([r.val_curve for r in runs])
        ep = np.arange(1, len(mean) + 1)
        ax[0].plot(ep, mean, color=colors[m], label=label)
        ax[0].fill_between(ep, low, high, color=colors[m], alpha=0.15, lw=0)
        acc = mean_interval([r.test_acc for r in runs])
        ax[1].errorbar([100 * runs[0].mults.fraction], [acc.mean], yerr=[[acc.mean - acc.low], [acc.high - acc.mean]],
                       fmt="o", color=colors[m], capsize=3, label=m)
    ax[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    ax[0].set(xlabel="epoch", ylabel="validation accuracy",
              title=f"training curves ({len(comp.seeds)} seeds, 95% band)")
    ax[1].set(xscale="log", xlabel="multiplications per example, hashing counted (% of dense)",
              ylabel="test accuracy", title="accuracy against work")
    ax[1].xaxis.set_major_locator(FixedLocator([2, 5, 10, 20, 50, 100]))
    ax[1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax[1].xaxis.set_minor_formatter(NullFormatter())
    for a in ax:
        a.legend(frameon=False, fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig
