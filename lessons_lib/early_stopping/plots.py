"""Lesson 02 · the figures: a validation curve with where early stopping stops, and the patience sweep's compute
saved vs accuracy lost with 95% intervals. Re-exported by ``lab`` (the notebook calls ``lab.plot_*``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..validate import BadArgument

if TYPE_CHECKING:
    from .lab import LongRun, PatienceSweeps, PolicyResult


def plot_curve_and_stop(run: LongRun, result: PolicyResult, others: Sequence[LongRun] = ()):
    """The validation curve of ``run`` with the best epoch and the stop of one policy marked; ``others``: the
    validation curves of further runs, drawn faintly for the spread."""
    import matplotlib.pyplot as plt

    from .lab import PolicyResult, _check_run, _check_runs

    run, others = _check_run(run), _check_runs(others, at_least=0) if len(others) else []
    if not isinstance(result, PolicyResult):
        raise BadArgument(f"result={result!r:.60}: must be a PolicyResult, as lab.evaluate_policy(run, ...) returns")
    h = run.history
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, o in enumerate(others):
        a.plot(o.history.epoch, o.history.val_loss, color="C1", alpha=0.25, lw=1,
               label=f"validation loss, the other {len(others)} runs" if k == 0 else None)
        b.plot(o.history.epoch, o.test_acc, color="C1", alpha=0.25, lw=1)
    a.plot(h.epoch, h.train_loss, color="C0", label="train loss")
    a.plot(h.epoch, h.val_loss, color="C1", label="validation loss")
    a.axvline(result.best_epoch, color="C2", ls="--", label=f"best epoch {result.best_epoch}")
    a.axvline(result.epochs_run - 1, color="C3", ls=":", label=f"stop (patience {result.patience})")
    a.axvspan(result.epochs_run - 0.5, h.epoch[-1] + 0.5, color="gray", alpha=0.15, label="compute saved")
    a.set(xlabel="epoch", ylabel="cross-entropy", title=f"where early stopping on {result.monitor} stops")
    a.legend(fontsize=8)
    b.plot(h.epoch, h.val_acc, color="C4", label="validation accuracy")
    b.plot(h.epoch, run.test_acc, color="C1", label="test accuracy" + (" (faint: the other runs)" if others else ""))
    b.axvline(result.best_epoch, color="C2", ls="--")
    b.axvline(result.epochs_run - 1, color="C3", ls=":")
    b.axhline(run.full_test_acc, color="gray", lw=0.8, label="yardstick: test acc at the last epoch")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy along the same run")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_patience_sweep(study: PatienceSweeps):
    """Compute saved vs accuracy lost (means over the runs with 95% intervals both ways), one line per monitored
    quantity, one point per patience."""
    import matplotlib.pyplot as plt

    from .lab import PatienceSweeps

    if not isinstance(study, PatienceSweeps) or not study.val_loss or not hasattr(study.val_loss[0], "results"):
        raise BadArgument(f"study={study!r:.60}: must be the patience study of several runs, lab.patience_study(runs)")
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    n = len(study.val_loss[0].results)
    for (monitor, sweep), color in zip(study.items(), ("C0", "C1")):
        xs, ys = [100 * r.saved.mean for r in sweep], [100 * r.lost.mean for r in sweep]
        ax.errorbar(xs, ys, xerr=[100 * r.saved.half_width for r in sweep],
                    yerr=[100 * r.lost.half_width for r in sweep], fmt="o-", color=color, capsize=3, alpha=0.9,
                    label=f"monitor {monitor}")
        labels: dict[tuple[float, float], list[int]] = {}
        for r, x, y in zip(sweep, xs, ys):
            labels.setdefault((round(x, 6), round(y, 6)), []).append(r.patience)
        for (x, y), ks in labels.items():
            ax.annotate("K=" + ",".join(map(str, ks)), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8,
                        color=color)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(xlabel="compute saved (% of epochs not run)", ylabel="test accuracy lost (points)",
           title=f"patience K: compute saved vs accuracy lost ({n} runs, 95% CI)")
    ax.legend()
    fig.tight_layout()
    return fig
