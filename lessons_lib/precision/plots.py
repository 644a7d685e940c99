"""Lesson 07 figures: matmul speed per format, the runs in each precision, the stochastic-rounding rescue and
the chaos experiment. Each function returns a matplotlib Figure. Curves over seeds are drawn as the mean with a
band: the 95% interval of the mean (:func:`lessons_lib.stats.mean_interval`) at every epoch."""

from __future__ import annotations

import torch

from ..stats import mean_interval
from .formats import DTYPES, DtypeTable
from .hypotheses import ChaosResult, SRResult
from .lab import BASELINE, Convergence, PrecisionRuns

COLORS = {"fp64": "C0", "fp32": "C1", "bf16": "C2", "fp16": "C3"}


def _band(ax, x, values: torch.Tensor, color: str, label: str, ls: str = "-", log: bool = False,  # noqa: ANN001
          lw: float = 1.5, alpha: float = 1.0):
    """Mean over runs (rows of ``values``) and its 95% interval as a band; ``log``: the band of log10 values."""
    v = values.log10() if log else values
    iv = [mean_interval(v[:, j].tolist()) for j in range(v.shape[1])]
    mean, lo, hi = (torch.tensor([getattr(i, k) for i in iv]) for k in ("mean", "low", "high"))
    if log:
        mean, lo, hi = 10**mean, 10**lo, 10**hi
    ax.plot(x, mean, ls, color=color, label=label, lw=lw, alpha=alpha)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def dtype_speed(table: DtypeTable):
    """Matmul GFLOP/s per dtype (one group of bars per device), log scale: the fastest round, with the range over
    the rounds as an error bar."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    devices = sorted({r.device for r in table.rows}, key=lambda d: d != "cpu")
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.8 / len(DTYPES)
    flops = 2 * table.n**3 / 1e9
    for i, name in enumerate(DTYPES):
        xs, ys, lows = [], [], []
        for j, d in enumerate(devices):
            r = table.get(d, name)
            if r.gflops:
                xs.append(j + (i - 1.5) * width)
                ys.append(r.gflops)
                lows.append(r.gflops - flops / max(table.timings[d][name].times))
        bars = ax.bar(xs, ys, width, color=COLORS[name], label=name, yerr=[lows, [0] * len(ys)], capsize=3)
        ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
    ax.set_xticks(range(len(devices)), devices)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(ylabel="GFLOP/s (log scale)",
           title=f"{table.n}×{table.n} matmul: fastest of {table.rounds} rounds (bar: down to the slowest)")
    ax.title.set_fontsize(10)
    ax.margins(y=0.2)
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    fig.tight_layout()
    return fig


def runs(runs: PrecisionRuns, conv: Convergence):
    """Left: validation accuracy per epoch of each recipe (mean and 95% band over the seeds). Middle: the fp32
    baseline's convergence (training and validation accuracy; the two windows the convergence check compares).
    Right: the share of updates lost per layer (mean and 95% interval over the seeds, log scale)."""
    import matplotlib.pyplot as plt

    fig, (a, m, b) = plt.subplots(1, 3, figsize=(15, 4.4))
    for label, r in runs.by_label.items():
        x = r.histories[0].epoch
        _band(a, [e + 1 for e in x], r.curve("val_acc"), COLORS[r.dtype], label,
              "-" if r.mode == "pure" else "--")
    a.axhline(0.1, color="gray", ls=":", lw=1, label="chance")
    a.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, None),
          title=f"each precision, {runs.runs} seeds (band: 95% interval)")
    a.legend(fontsize=8)
    f = runs[BASELINE]
    x = [e + 1 for e in f.histories[0].epoch]
    _band(m, x, f.curve("train_acc"), "C7", "training accuracy", "--")
    _band(m, x, f.curve("val_acc"), COLORS["fp32"], "validation accuracy")
    n = len(x)
    for start, color in ((n - conv.lag - conv.window, "C0"), (n - conv.window, "C2")):
        m.axvspan(start + 0.5, start + conv.window + 0.5, color=color, alpha=0.15, lw=0)
    m.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02),
          title="control: has the fp32 baseline converged?\n(shaded: the windows whose val. accuracy is compared)")
    m.title.set_fontsize(10)
    m2 = m.twinx()
    _band(m2, x, f.curve("val_loss"), "C4", "validation loss (right axis)", ":")
    m2.set_ylabel("validation loss (cross-entropy)")
    lines = m.get_legend_handles_labels()
    more = m2.get_legend_handles_labels()
    m.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    layers = list(f.lost_by_layer[0])
    labels = list(runs.by_label)
    w = 0.8 / len(labels)
    for i, label in enumerate(labels):
        r = runs[label]
        means, errs = [], []
        for k in layers:
            iv = r.lost_interval(k) if all(k in d for d in r.lost_by_layer) else None
            means.append(max(100 * iv.mean, 1e-3) if iv else 1e-3)
            errs.append(100 * iv.half_width if iv else 0)
        b.bar([j + (i - len(labels) / 2 + 0.5) * w for j in range(len(layers))], means, w, yerr=errs, capsize=2,
              color=COLORS[r.dtype], hatch="" if r.mode == "pure" else "//", label=label, edgecolor="white")
    b.set_xticks(range(len(layers)), [k.replace(".weight", " W").replace(".bias", " b") for k in layers], fontsize=8)
    b.set(yscale="log", ylim=(1e-3, 150), ylabel="% of updates lost (w + u == w)",
          title="updates lost to rounding, per layer (no bar: none lost)",
          xlabel="parameter tensor (layer index in the MLP)")
    b.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def sr_rescue(sr: SRResult):
    """Training loss per epoch and updates lost per step (mean and 95% band over the seeds): fp32, stored bf16
    round-to-nearest, stored stochastic."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    styles = [(sr.fp32, "C1", "-", 4, 0.6), (sr.nearest, "C3", "--", 1.5, 1), (sr.stochastic, "C2", "-.", 1.5, 1)]
    for r, c, ls, lw, alpha in styles:  # fp32 drawn wide and pale: a run on top of it stays visible
        _band(a, [e + 1 for e in r.histories[0].epoch], r.curve("train_loss"), c, r.label, ls, lw=lw, alpha=alpha)
        per_step = 100 * torch.tensor(r.lost_per_step, dtype=torch.float64)
        _band(b, [1 + i * r.lost_every for i in range(per_step.shape[1])], per_step, c, r.label, ls, lw=lw,
              alpha=alpha)
    cfg = sr.fp32.histories[0].config
    a.set(xlabel="epoch", ylabel="training loss",
          title=f"small steps ({cfg['optimizer']}, lr {cfg['lr']:g}), {len(sr.fp32)} seeds: training loss")
    a.legend(fontsize=8)
    b.set(xlabel="optimizer step", ylabel="% of updates lost", ylim=(-2, 102), title="updates lost at each step")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def chaos(ch: ChaosResult):
    """Left: how far the runs' weights are from the first seed's run, epoch by epoch (log scale): one bit flipped
    vs other seeds. Middle: the same for validation predictions (share that differ). Right: final validation
    accuracy of each run, with the mean and 95% interval of each group."""
    import matplotlib.pyplot as plt

    fig, (a, m, b) = plt.subplots(1, 3, figsize=(15, 3.9))
    x = range(ch.distance_bits.shape[1])
    kept = ch.distance_bits[ch.distance_bits[:, -1] > 0]
    gone = f"; {ch.absorbed} run(s) rounded it away: distance 0" if ch.absorbed else ""
    for vals, color, label in ((kept, "C3", f"one bit of one weight flipped ({len(kept)} runs{gone})"),
                               (ch.distance_seeds, "C0", f"another seed ({len(ch.distance_seeds)} runs)")):
        _band(a, x, vals, color, label, log=True)
    a.set(yscale="log", xlabel="epoch (0 = start)", ylabel="|w − w_ref| / |w_ref|",
          title="weights: distance from the first seed's run")
    a.legend(fontsize=7, loc="lower right")
    for vals, color, label in ((ch.disagreement_bits, "C3", "one bit flipped"),
                               (ch.disagreement_seeds, "C0", "another seed")):
        _band(m, x, 100 * vals, color, label)
    m.set(xlabel="epoch (0 = start)", ylabel="% of validation predictions that differ",
          title="predictions: share that differ from the first seed's run")
    m.legend(fontsize=8, loc="center right")
    for i, (r, color, label) in enumerate(((ch.bits, "C3", "one bit flipped"), (ch.seeds, "C0", "another seed"))):
        acc = r.final()
        b.plot([i + 0.08 * (j % 5 - 2) for j in range(len(acc))], acc, "o", color=color, alpha=0.6, ms=5)
        iv = r.interval()
        b.errorbar([i + 0.3], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="s", color=color,
                   capsize=4, label=f"{label}: mean, 95% interval")
    b.set_xticks([0, 1], [f"one bit ({len(ch.bits)} runs)", f"seeds ({len(ch.seeds)} runs)"])
    b.set(xlim=(-0.5, 1.6), ylabel="final validation accuracy", title="spread of the final accuracy")
    b.legend(fontsize=7, loc="lower center")
    fig.tight_layout(w_pad=2.5)
    return fig
