"""Lesson 04's figures."""

from __future__ import annotations

from .lab import GeneratorRow


def plot_generators(rows: list[GeneratorRow], title: str = "", path: str | None = None):
    """Horizontal bars, log scale: time per mask; binomial red, floors grey and hatched."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.2))
    vals = [r.seconds * 1e6 for r in rows]
    colors = ["#d62728" if r.method == "binomial" else ("#bbbbbb" if r.method.startswith("floor") else "#1f77b4")
              for r in rows]
    bars = ax.barh([r.method for r in rows], vals, color=colors)
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
