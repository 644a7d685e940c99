"""Lesson 07 figures: matmul speed per format, the runs in each precision, the stochastic-rounding rescue and
the chaos experiment. Each function returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

from .formats import DTYPES, DtypeTable
from .hypotheses import ChaosResult, SRResult
from .lab import PrecisionRun

COLORS = {"fp64": "C0", "fp32": "C1", "bf16": "C2", "fp16": "C3"}


def dtype_speed(table: DtypeTable):
    """Matmul GFLOP/s per dtype (one group of bars per device), log scale."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    devices = sorted({r.device for r in table.rows}, key=lambda d: d != "cpu")
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.8 / len(DTYPES)
    for i, name in enumerate(DTYPES):
        xs, ys = [], []
        for j, d in enumerate(devices):
            r = table.get(d, name)
            if r.gflops:
                xs.append(j + (i - 1.5) * width)
                ys.append(r.gflops)
        bars = ax.bar(xs, ys, width, color=COLORS[name], label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(devices)), devices)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(ylabel="GFLOP/s (log scale)",
           title=f"{table.n}×{table.n} matmul throughput, threads={table.threads}")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    fig.tight_layout()
    return fig


def runs(runs: Sequence[PrecisionRun]):
    """Left: validation accuracy per epoch of each run. Right: lost-update share per layer (log scale)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    for r in runs:
        ls = "-" if r.mode == "pure" else "--"
        a.plot(r.history.epoch, r.history.val_acc, ls, color=COLORS[r.dtype], label=r.label, marker=".")
    a.axhline(0.1, color="gray", ls=":", lw=1, label="chance")
    a.set(xlabel="epoch", ylabel="validation accuracy", title="the same MLP in each precision", ylim=(0, None))
    a.legend(fontsize=8)
    layers = list(runs[0].lost_by_layer)
    bar_runs = [r for r in runs if r.lost_by_layer]
    w = 0.8 / max(len(bar_runs), 1)
    for i, r in enumerate(bar_runs):
        vals = [max(100 * r.lost_by_layer.get(k, 0.0), 1e-3) for k in layers]
        hatch = "" if r.mode == "pure" else "//"
        b.bar([j + (i - len(bar_runs) / 2 + 0.5) * w for j in range(len(layers))], vals, w,
              color=COLORS[r.dtype], hatch=hatch, label=r.label, edgecolor="white")
    b.set_xticks(range(len(layers)), [k.replace(".weight", " W").replace(".bias", " b") for k in layers], fontsize=8)
    b.set(yscale="log", ylim=(1e-3, 150), ylabel="% of updates lost (w + u == w)",
          title="updates lost to rounding, per layer (no bar: none lost)",
          xlabel="parameter tensor (layer index in the MLP)")
    b.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def sr_rescue(sr: SRResult):
    """Training loss per epoch and updates lost per step: fp32, stored bf16 round-to-nearest, stored stochastic."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    styles = [(sr.fp32, "C1", "-", 4), (sr.nearest, "C3", "--", 1.5), (sr.stochastic, "C2", "-.", 1.5)]
    for r, c, ls, lw in styles:
        a.plot(r.history.epoch, r.history.train_loss, ls, color=c, lw=lw, alpha=0.6 if r is sr.fp32 else 1,
               marker=".", label=r.label)
        steps = range(1, len(r.lost_per_step) + 1)
        b.plot(steps, [100 * v for v in r.lost_per_step], ls, color=c, label=r.label)
    cfg = sr.fp32.history.config
    a.set(xlabel="epoch", ylabel="training loss", title=f"small steps ({cfg['optimizer']}, lr {cfg['lr']:g}): "
          "training loss")
    a.legend(fontsize=8)
    b.set(xlabel="optimizer step", ylabel="% of updates lost", ylim=(-2, 102), title="updates lost at each step")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def chaos(chaos: ChaosResult):
    """Final validation accuracy per seed: original vs lowest-bit-flipped initial weights."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    x = range(len(chaos.seeds))
    ax.plot(x, chaos.acc, "o", ms=9, color="C0", label="original")
    ax.plot(x, chaos.acc_perturbed, "x", ms=10, mew=2, color="C3", label="lowest bit of every weight flipped")
    ax.set_xticks(list(x), [f"seed {s}" for s in chaos.seeds])
    lo, hi = min(chaos.acc + chaos.acc_perturbed), max(chaos.acc + chaos.acc_perturbed)
    ax.set(ylabel="final validation accuracy", ylim=(lo - 0.03, hi + 0.03), xlim=(-0.5, len(chaos.seeds) - 0.5),
           title="tiny perturbation vs a different seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
