"""Lesson 05's figures (matplotlib), one per measurement of :mod:`.lab`."""

from __future__ import annotations

import numpy as np

from .lab import AffineParams, IdentityTask, Pitfalls, Sweep


def plot_sweep(sweep: Sweep):
    """Best val accuracy and epochs to the target, against the learning rate, with and without BN."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    n_ep = len(sweep.histories[(True, sweep.lrs[0])].epoch)
    styles = {False: ("without BN", "#d62728", "s--"), True: ("with BN", "#1f77b4", "o-")}
    for bn, (label, color, fmt) in styles.items():
        a.plot(sweep.lrs, sweep.final_acc(bn), fmt, color=color, label=label)
        ep = sweep.epochs_to_target(bn)
        reached = [(lr, e) for lr, e in zip(sweep.lrs, ep) if e is not None]
        never = [lr for lr, e in zip(sweep.lrs, ep) if e is None]
        if reached:
            b.plot(*zip(*reached), fmt[0], color=color, label=label, ms=8, ls="none")
        if never:
            b.plot(never, [n_ep + 1 + (0.25 if bn else 0)] * len(never), "x", color=color, ms=9, mew=2,
                   label=f"{label}: never")
    a.axhline(sweep.target, color="gray", lw=1, ls=":")
    a.text(sweep.lrs[0], sweep.target + 0.015, f"target {sweep.target:.0%}", color="gray", fontsize=9)
    a.set(xscale="log", xlabel="learning rate (SGD, momentum 0.9)", ylabel="best val accuracy", ylim=(0, 1.02),
          title="How well each learning rate trains")
    b.set(xscale="log", xlabel="learning rate", ylabel="epochs", ylim=(0, n_ep + 2),
          title=f"Epochs to reach {sweep.target:.0%} val accuracy (x = never in {n_ep})")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left" if ax is a else "center right")
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


def plot_pitfalls(p: Pitfalls):
    """Validation accuracy of one trained BN model predicted the right way and the wrong ways."""
    import matplotlib.pyplot as plt

    labels = ["eval mode\n(whole set)", "eval mode\nbatch of 1"]
    values = [p.eval_acc, p.batch1_eval_acc]
    colors = ["#1f77b4", "#1f77b4"]
    for bs, acc in sorted(p.train_mode_acc.items(), reverse=True):
        labels.append(f"train mode\nbatches of {bs}")
        values.append(acc)
        colors.append("#d62728")
    fig, ax = plt.subplots(figsize=(9, 3.4))
    bars = ax.bar(range(len(values)), values, color=colors)
    for r, v in zip(bars, values):
        ax.text(r.get_x() + r.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel="val accuracy", title="The same trained model, evaluated right (blue) and wrong (red)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
