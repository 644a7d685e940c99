"""Lesson 05's figures (matplotlib), one per measurement of :mod:`.lab`. Measurements repeated over runs are drawn
as their mean with a 95% interval (error bars or a band) and say how many runs they summarize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..stats import column_intervals
from .lab import LABELS, AffineOverTraining, AffineParams, IdentityTask, Pitfalls, Sweep

COLORS = {"bn": "#1f77b4", "plain": "#d62728", "plain_he": "#ff7f0e"}
FMT = {"bn": "o-", "plain": "s--", "plain_he": "^-."}


def _errorbar(ax, x: Sequence[float], rows: np.ndarray, treatment: str, **kw) -> None:
    mean, low, high = column_intervals(rows)
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt=FMT[treatment], color=COLORS[treatment], capsize=3,
                ms=5, label=LABELS[treatment], **kw)


def plot_sweep(sweep: Sweep):
    """Left: best val accuracy against the learning rate for every treatment (mean and 95% interval over the
    runs). Right: val accuracy per epoch of each treatment at its own best learning rate (mean, 95% band)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    n = len(sweep.seeds)
    for t in sweep.treatments:
        _errorbar(a, sweep.lrs, np.array([sweep.best_acc(t, lr) for lr in sweep.lrs]).T, t)
        lr = sweep.best_lr(t)
        rows = np.array([h.val_acc for h in sweep.histories[(t, lr)]])
        mean, low, high = column_intervals(rows)
        ep = np.arange(1, rows.shape[1] + 1)
        b.plot(ep, mean, FMT[t], color=COLORS[t], ms=4, label=f"{LABELS[t]}, lr {lr:g}")
        b.fill_between(ep, low, high, color=COLORS[t], alpha=0.2, lw=0)
    for ax in (a, b):
        ax.axhline(sweep.target, color="gray", lw=1, ls=":")
        ax.grid(alpha=0.3)
    a.text(sweep.lrs[0], sweep.target + 0.015, f"target {sweep.target:.0%}", color="gray", fontsize=9)
    a.set(xscale="log", xlabel="learning rate (SGD, momentum 0.9)", ylabel="best val accuracy", ylim=(0, 1.02),
          title=f"How well each learning rate trains ({n} runs each, 95% CI)")
    b.set(xlabel="epoch", ylabel="val accuracy", ylim=(0, 1.02),
          title="Each net at its fastest learning rate (95% band)")
    b.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.legend(fontsize=8, loc="lower center")
    b.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_identity_task(task: IdentityTask):
    """Left: the identity task's error with and without affine terms. Right: what gamma and beta learned
    vs the input's sd and mean."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(task.loss_plain, color="#d62728", label="no affine (gamma = 1, beta = 0 fixed)")
    a.plot(task.loss_affine, color="#1f77b4", label="learnable gamma, beta")
    a.set(yscale="log", xlabel="gradient step", ylabel="mean squared error of BN(x) vs x",
          title="Can a BN layer pass its input through?")
    a.legend(fontsize=8)
    lo = min(task.true_mean.min(), task.beta.min(), 0) - 0.3
    hi = max(task.true_sd.max(), task.gamma.max(), task.true_mean.max()) + 0.3
    b.plot([lo, hi], [lo, hi], color="gray", lw=1, ls=":", label="learned = true")
    b.plot(task.true_sd, task.gamma, "o", color="#1f77b4", label="gamma vs the input's sd")
    b.plot(task.true_mean, task.beta, "s", color="#2ca02c", label="beta vs the input's mean")
    b.set(xlabel="what the input has (per feature)", ylabel="what BN learned", title="gamma -> sd, beta -> mean")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_learned_affine(params: list[AffineParams]):
    """A trained network's gamma (beta) per unit against the value that would undo its normalization,
    sqrt(running_var + eps) (running_mean): on the dotted diagonal the layer would cancel BN."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, p in enumerate(params):
        a.plot(p.undo_gamma, p.gamma, "o", ms=4, alpha=0.7, label=f"BN layer {i + 1}")
        b.plot(p.undo_beta, p.beta, "o", ms=4, alpha=0.7, label=f"BN layer {i + 1}")
    for ax, name, init in ((a, "gamma", 1.0), (b, "beta", 0.0)):
        vals = np.concatenate([np.r_[getattr(p, name), getattr(p, "undo_" + name)] for p in params])
        lo, hi = min(vals.min(), init) - 0.1, max(vals.max(), init) + 0.1
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls=":", label=f"{name} that undoes BN")
        ax.axhline(init, color="black", lw=0.8, ls="--", label=f"initial {name} = {init:g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    a.set(xlabel="sqrt(running_var + eps)", ylabel="learned gamma", title="gamma after training, per unit")
    b.set(xlabel="running_mean", ylabel="learned beta", title="beta after training, per unit")
    fig.tight_layout()
    return fig


def plot_pitfalls(pits: Sequence[Pitfalls]):
    """Validation accuracy of the trained BN models predicted the right way and the wrong ways: mean over the
    models with its 95% interval (error bars) and every model's value (dots)."""
    import matplotlib.pyplot as plt

    labels = ["eval mode\n(whole set)", "eval mode\nbatch of 1"]
    rows = [[p.eval_acc for p in pits], [p.batch1_eval_acc for p in pits]]
    colors = ["#1f77b4", "#1f77b4"]
    for bs in sorted(pits[0].train_mode_acc, reverse=True):
        labels.append(f"train mode\nbatches of {bs}")
        rows.append([p.train_mode_acc[bs] for p in pits])
        colors.append("#d62728")
    fig, ax = plt.subplots(figsize=(9, 3.4))
    mean, low, high = column_intervals(np.array(rows).T)
    x = np.arange(len(rows))
    ax.bar(x, mean, color=colors, alpha=0.8, yerr=[mean - low, high - mean], capsize=4)
    for i, (vals, m, top) in enumerate(zip(rows, mean, high)):
        ax.plot(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals, ".", color="black", ms=3)
        ax.text(i, min(max(top, max(vals)) + 0.025, 1.05), f"{m:.3f}", ha="center", fontsize=9)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel="val accuracy",
           title=f"The same trained models ({len(pits)} runs), evaluated right (blue) and wrong (red)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_affine_over_training(run: AffineOverTraining, short: int = 8):
    """Left: how far gamma and beta moved from their start (mean |gamma - 1|, mean |beta|) and how far they are
    from cancelling BN, per epoch (mean over runs, 95% band). Right: the training loss per epoch."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    ep = np.arange(1, run.epochs + 1)
    for name, label, color, ls in (("gamma_from_init", "|gamma - 1|: moved", "#1f77b4", "-"),
                                   ("beta_from_init", "|beta - 0|: moved", "#2ca02c", "-"),
                                   ("gamma_from_undo", "|gamma - sqrt(running_var)|: to cancel", "#1f77b4", "--"),
                                   ("beta_from_undo", "|beta - running_mean|: to cancel", "#2ca02c", "--")):
        mean, low, high = column_intervals(run.series(name))
        a.plot(ep, mean, ls, color=color, label=label)
        a.fill_between(ep, low, high, color=color, alpha=0.2, lw=0)
    mean, low, high = column_intervals(np.log10(run.series("train_loss")))
    b.plot(ep, 10**mean, color="black", label="training loss")
    b.fill_between(ep, 10**low, 10**high, color="black", alpha=0.15, lw=0)
    for ax in (a, b):
        ax.axvline(short, color="gray", lw=1, ls=":")
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
    a.text(short + 0.5, a.get_ylim()[1] * 0.7, f"epoch {short}", color="gray", fontsize=8)
    a.set(ylabel="mean over all BN units", ylim=(0, None),
          title=f"gamma, beta: moved vs needed to cancel BN ({len(run.seeds)} runs, lr {run.lr:g})")
    b.set(yscale="log", ylabel="training loss (geometric mean)", title="What is left to learn")
    a.legend(fontsize=7, loc="center right")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig
