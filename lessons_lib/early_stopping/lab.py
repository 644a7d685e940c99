"""Lesson 02 · the apparatus: a real overfitting run, stopping policies replayed on it, the live panel, the
claims table and the figures. The rules themselves are in ``reference.py``.

Training is deterministic for a seed, so replaying the validation curve of one long run through
:class:`~lessons_lib.early_stopping.reference.EarlyStopping` gives exactly where a live run with the same
settings stops: one 60-epoch run prices every patience and ``min_delta`` (compute saved vs accuracy lost).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import load
from ..models import mlp
from ..seeds import seed_everything
from ..training import History, evaluate, fit
from .reference import EarlyStopping


class TestAccuracy(Callback):
    """Records the test accuracy after every epoch into ``self.values`` (for the lesson's accounting:
    what a stop at epoch e would have given). It never influences training."""

    def __init__(self, x_test: torch.Tensor, y_test: torch.Tensor):
        self.x, self.y = x_test, y_test
        self.values: list[float] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.values.append(evaluate(state.model, self.x.to(state.device), self.y.to(state.device))[1])


MODE_OF = {"val_loss": "min", "val_acc": "max", "train_loss": "min", "train_acc": "max"}


@dataclass
class LongRun:
    """A run trained for all ``epochs`` with no stopping, plus the test accuracy after each epoch."""

    history: History
    test_acc: list[float]

    @property
    def epochs(self) -> int:
        return len(self.history)

    def best_epoch(self, monitor: str = "val_loss") -> int:
        """The epoch a validation-based choice over the whole run picks (argmin loss / argmax accuracy)."""
        return self.history.best(monitor, mode=MODE_OF[monitor])[0]

    @property
    def best_val_epoch(self) -> int:
        return self.best_epoch("val_loss")

    @property
    def reference_acc(self) -> float:
        """Test accuracy of the full budget with the best-validation-accuracy weights kept: the yardstick."""
        return self.test_acc[self.best_epoch("val_acc")]


def experiment(
    *,
    device: str = "cpu",
    callbacks: Sequence[Callback] = (),
    patience: int | None = 5,
    min_delta: float = 0.0,
    monitor: str = "val_loss",
    restore_best_weights: bool = True,
    epochs: int = 60,
    width: int = 512,
    lr: float = 1e-3,
    seed: int | None = None,
    early_stopping: type[Callback] = EarlyStopping,
) -> History:
    """An MLP (2 hidden layers of ``width``) on MNIST-1D that overfits, with early stopping on ``monitor``
    ("val_loss" or "val_acc"; ``patience=None``: no early stopping). ``early_stopping`` is the class used: the
    reference or the learner's own, built as ``early_stopping(monitor=, mode=, patience=, min_delta=,
    restore_best_weights=)``."""
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed)
    model = mlp(data.n_features, [width, width], data.n_classes)
    cbs = list(callbacks)
    if patience is not None:
        cbs.insert(0, early_stopping(monitor=monitor, mode=MODE_OF[monitor], patience=int(patience),
                                     min_delta=min_delta, restore_best_weights=restore_best_weights))
    return fit(model, data, epochs=epochs, lr=lr, batch_size=64, device=device, callbacks=cbs, seed=seed,
               config={"patience": patience, "min_delta": min_delta, "monitor": monitor,
                       "restore": restore_best_weights})


def long_run(*, epochs: int = 60, width: int = 512, device: str = "cpu", seed: int | None = None) -> LongRun:
    """Train without early stopping, recording test accuracy per epoch (the data every policy is replayed on)."""
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed)
    rec = TestAccuracy(data.x_test, data.y_test)
    h = experiment(patience=None, epochs=epochs, width=width, device=device, seed=seed, callbacks=[rec])
    return LongRun(h, rec.values)


def replay(values: Sequence[float], **kwargs) -> EarlyStopping:
    """Feed a recorded curve to ``EarlyStopping(**kwargs)`` until it stops; return the callback (its
    ``stopped_epoch`` is None if it never stops). Training is deterministic, so this is exactly where a
    live run with the same settings stops (the lesson checks that)."""
    es = EarlyStopping(**kwargs)
    for v in values:
        if es.step(v):
            break
    return es


def trace(values: Sequence[float], **kwargs) -> str:
    """A table of what ``EarlyStopping(**kwargs)`` sees and decides at each value, for teaching."""
    es = EarlyStopping(**kwargs)
    lines = [f"{'epoch':>5} {'value':>8} {'improved?':>10} {'best':>8} {'wait':>5}  decision"]
    for v in values:
        before = es.best
        stop = es.step(v)
        improved = es.best_epoch == es.epoch
        lines.append(f"{es.epoch:5d} {v:8.4g} {('yes' if improved else 'no'):>10} {es.best:8.4g} {es.wait:5d}  "
                     + ("STOP" + (f" (best {before:.4g} at epoch {es.best_epoch})" if not improved else "")
                        if stop else "continue"))
        if stop:
            break
    return "\n".join(lines)


@dataclass
class PolicyResult:
    """What one stopping policy costs and gives, replayed on a :class:`LongRun`."""

    monitor: str
    patience: int
    min_delta: float
    epochs_run: int
    stopped: bool
    best_epoch: int
    test_acc_restored: float  # weights of the best epoch seen (restore_best_weights=True)
    test_acc_last: float  # weights of the last epoch run (restore_best_weights=False)
    budget: int  # epochs of the long run: what training without early stopping runs
    compute_saved: float  # fraction of the long run's epochs not run
    acc_lost: float  # run.reference_acc - test_acc_restored (a fraction: 0.01 is one point)


def evaluate_policy(run: LongRun, patience: int, min_delta: float = 0.0, monitor: str = "val_loss") -> PolicyResult:
    """Replay ``EarlyStopping(monitor, patience, min_delta)`` on ``run`` and account for it against
    :attr:`LongRun.reference_acc` (all epochs trained, best-validation-accuracy weights kept)."""
    values = getattr(run.history, monitor)
    es = replay(values, monitor=monitor, mode=MODE_OF[monitor], patience=patience, min_delta=min_delta)
    epochs_run = (es.stopped_epoch + 1) if es.stopped_epoch is not None else run.epochs
    restored = run.test_acc[es.best_epoch]
    return PolicyResult(monitor, patience, min_delta, epochs_run, es.stopped_epoch is not None, es.best_epoch,
                        restored, run.test_acc[epochs_run - 1], run.epochs, 1 - epochs_run / run.epochs,
                        run.reference_acc - restored)


PATIENCES = (0, 1, 2, 3, 5, 8, 12, 20)


def patience_sweep(run: LongRun, patiences: Sequence[int] = PATIENCES, min_delta: float = 0.0,
                   monitor: str = "val_loss") -> list[PolicyResult]:
    """One :class:`PolicyResult` per patience, replayed on ``run``."""
    return [evaluate_policy(run, p, min_delta, monitor) for p in patiences]


@dataclass
class PatienceSweeps:
    """The patience sweep of one run, monitoring the validation loss and the validation accuracy."""

    val_loss: list[PolicyResult]
    val_acc: list[PolicyResult]

    def items(self) -> Iterator[tuple[str, list[PolicyResult]]]:
        """(monitor, sweep) pairs, loss first."""
        yield "val_loss", self.val_loss
        yield "val_acc", self.val_acc

    def at(self, patience: int, monitor: str = "val_loss") -> PolicyResult:
        """The row of ``patience`` in the sweep of ``monitor``."""
        return next(r for r in getattr(self, monitor) if r.patience == patience)


def patience_sweeps(run: LongRun, patiences: Sequence[int] = PATIENCES) -> PatienceSweeps:
    """:func:`patience_sweep` on ``run`` monitoring val_loss and then val_acc."""
    return PatienceSweeps(patience_sweep(run, patiences, monitor="val_loss"),
                          patience_sweep(run, patiences, monitor="val_acc"))


def min_delta_sweep(run: LongRun, patience: int = 5, min_deltas: Sequence[float] = (0.0, 0.001, 0.01, 0.05),
                    monitor: str = "val_loss") -> list[PolicyResult]:
    return [evaluate_policy(run, patience, d, monitor) for d in min_deltas]


def claims(run: LongRun, sweeps: PatienceSweeps, deltas: list[PolicyResult], live_stop: int | None,
           replay_stop: int | None, K: int = 5) -> Claims:
    """Lesson 02's claims table, each verdict computed from this run (``live_stop``: where the live run with
    the learner's early stopping stopped; ``replay_stop``: where the reference stops on the recorded curve)."""
    c = Claims("02 early stopping")
    h = run.history
    b = run.best_val_epoch
    c.add("Validation loss starts to get bigger at some point (the signal to stop)", "seed 004",
          f"val loss lowest at epoch {b} ({h.val_loss[b]:.3f}), {h.val_loss[-1]:.3f} at epoch {run.epochs - 1}",
          b < run.epochs - 1 and h.val_loss[-1] - h.val_loss[b] > 0.05)
    pk = sweeps.at(K, "val_loss")
    window = h.val_loss[pk.best_epoch + 1: pk.epochs_run]
    quiet = len(window) == K and all(v >= h.val_loss[pk.best_epoch] for v in window)
    c.add(f"patience = K: stop when val loss has not improved in the past K = {K} epochs", "seed 004",
          f"stopped after epoch {pk.epochs_run - 1}; best epoch {pk.best_epoch}; the {len(window)} epochs after it "
          f"{'never' if quiet else 'did'} improve", pk.stopped and quiet)
    d0 = next(r for r in deltas if r.min_delta == 0.0)
    d1 = next(r for r in deltas if r.min_delta == 0.01)
    c.add("min_delta = 0.01: improvements smaller than 0.01 do not count (stops no later)", "seed 004",
          f"patience {K}: {d1.epochs_run} epochs with min_delta 0.01 vs {d0.epochs_run} with 0",
          d1.epochs_run <= d0.epochs_run)
    for monitor, _ in sweeps.items():
        r = sweeps.at(K, monitor)
        c.add(f"Early stopping on {monitor} saves compute at little cost in accuracy (≤ 1 point)", "lesson",
              f"patience {K}: {r.compute_saved:.0%} of {run.epochs} epochs saved; test accuracy "
              f"{r.test_acc_restored:.3f} vs {run.reference_acc:.3f} for the full run",
              r.compute_saved > 0.2 and r.acc_lost <= 0.01)
    c.add("Restoring the best weights beats keeping the last ones", "lesson",
          f"val_loss, patience {K}: test accuracy {pk.test_acc_restored:.3f} restored vs {pk.test_acc_last:.3f} last",
          pk.test_acc_restored >= pk.test_acc_last)
    c.add("Live training with your early stopping stops where the reference stops on the recorded curve "
          "(training is deterministic)", "lesson",
          f"live run stopped at epoch {live_stop}, replay at {replay_stop}", live_stop == replay_stop)
    return c


def plot_curve_and_stop(run: LongRun, result: PolicyResult):
    """The validation curve with the best epoch and the stop of one policy marked."""
    import matplotlib.pyplot as plt

    h = run.history
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(h.epoch, h.train_loss, label="train loss")
    a.plot(h.epoch, h.val_loss, label="validation loss")
    a.axvline(result.best_epoch, color="C2", ls="--", label=f"best epoch {result.best_epoch}")
    a.axvline(result.epochs_run - 1, color="C3", ls=":", label=f"stop (patience {result.patience})")
    a.axvspan(result.epochs_run - 0.5, h.epoch[-1] + 0.5, color="gray", alpha=0.15, label="compute saved")
    a.set(xlabel="epoch", ylabel="cross-entropy", title=f"where early stopping on {result.monitor} stops")
    a.legend(fontsize=8)
    b.plot(h.epoch, h.val_acc, label="validation accuracy")
    b.plot(h.epoch, run.test_acc, label="test accuracy")
    b.axvline(result.best_epoch, color="C2", ls="--")
    b.axvline(result.epochs_run - 1, color="C3", ls=":")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy along the same run")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_patience_sweep(sweeps: PatienceSweeps):
    """Compute saved vs accuracy lost, one line per monitored quantity, one point per patience."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for monitor, sweep in sweeps.items():
        xs = [100 * r.compute_saved for r in sweep]
        ys = [100 * r.acc_lost for r in sweep]
        ax.plot(xs, ys, "o-", label=f"monitor {monitor}")
        labels: dict[tuple[float, float], list[int]] = {}
        for r, x, y in zip(sweep, xs, ys):
            labels.setdefault((x, y), []).append(r.patience)
        for (x, y), ks in labels.items():
            ax.annotate("K=" + ",".join(map(str, ks)), (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(xlabel="compute saved (% of epochs not run)", ylabel="test accuracy lost (points)",
           title="patience K: compute saved vs accuracy lost")
    ax.legend()
    fig.tight_layout()
    return fig


def make_panel(early_stopping: type[Callback] = EarlyStopping):
    """Lesson 02's live panel: patience, min_delta, monitor, restore best weights, max epochs, width; runs with
    the ``early_stopping`` class given (the learner's, once it passes its check)."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "110px"}
    knobs = {
        "patience": w.IntSlider(value=5, min=0, max=30, description="patience K", style=style),
        "min_delta": w.SelectionSlider(options=[0.0, 0.001, 0.01, 0.05, 0.1], value=0.0, description="min_delta",
                                       style=style),
        "monitor": w.ToggleButtons(options=["val_loss", "val_acc"], value="val_loss", description="monitor",
                                   style=style),
        "restore_best_weights": w.Checkbox(value=True, description="restore best weights"),
        "epochs": w.IntSlider(value=60, min=5, max=200, description="max epochs", style=style),
        "width": w.SelectionSlider(options=[64, 128, 256, 512, 1024], value=512, description="width", style=style),
    }
    return LivePanel(partial(experiment, early_stopping=early_stopping), knobs,
                     title="Early stopping: an overfitting MLP on MNIST-1D")


# --- the questions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Quiz:
    """A hand-made validation curve and the early-stopping settings the questions ask about."""

    values: tuple[float, ...]
    min_delta: float
    patience: int
    mode: str = "min"


QUIZ = Quiz(values=(0.90, 0.70, 0.69, 0.68, 0.71, 0.60), min_delta=0.05, patience=3)
