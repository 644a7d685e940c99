"""Lesson 04's figures."""

from __future__ import annotations

import numpy as np

from .lab import GeneratorRow


def plot_generators(rows: list[GeneratorRow], title: str = "", path: str | None = None):
    """Horizontal bars, log scale: median CPU time per mask, whiskers the range over the timing rounds; binomial
    red, floors grey and hatched."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.2))
    vals = np.array([r.seconds * 1e6 for r in rows])
    lo = np.array([min(r.times or [r.seconds]) * 1e6 for r in rows])
    hi = np.array([max(r.times or [r.seconds]) * 1e6 for r in rows])
    colors = ["#d62728" if r.method == "binomial" else ("#bbbbbb" if r.method.startswith("floor") else "#1f77b4")
              for r in rows]
    bars = ax.barh([r.method for r in rows], vals, color=colors, xerr=[vals - lo, hi - vals], ecolor="0.3",
                   capsize=2)
    for b, r, h in zip(bars, rows, hi):
        if r.method.startswith("floor"):
            b.set_hatch("//")
        ax.text(h * 1.15, b.get_y() + b.get_height() / 2, f"{r.seconds * 1e6:.0f} µs ({r.speedup:.0f}x)",
                va="center", fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlim(lo.min() / 2, hi.max() * 8)
    n = len(rows[0].times)
    ax.set_xlabel(f"µs per mask (log scale): median CPU time, whiskers the range of {n} rounds" if n else
                  "µs per mask (log scale)")
    ax.set_title(title or "Dropout mask generators")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)
    return fig
