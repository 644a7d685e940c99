"""Early stopping with Keras 3 semantics (``keras.callbacks.EarlyStopping``), usable on its own or as a
:class:`~lessons_lib.callbacks.Callback` of :func:`~lessons_lib.training.fit`.

The rules, per value of the monitored quantity (one call of :meth:`EarlyStopping.step` per epoch):

* **improvement** in ``mode="min"``: ``current < best - |min_delta|`` (strictly); in ``mode="max"``:
  ``current > best + |min_delta|``. ``best`` starts at +inf (min) or -inf (max), so the first finite
  value always improves.
* ``wait`` counts epochs since the last improvement. It is reset to 0 on an improvement, unless a
  ``baseline`` is set and the value does not also beat the baseline (then the model has to beat the
  baseline within ``patience`` epochs).
* **stop** when ``wait`` reaches ``patience`` (never on the very first value). ``patience=0`` stops at
  the first epoch without improvement.
* a NaN or infinite value stops at once (Keras needs a separate ``TerminateOnNaN`` for that).
* ``restore_best_weights=True``: a copy of the weights is kept at each improvement and put back into
  the model when training ends (Keras 3 does this at the end of training, stopped early or not).

Seed 004 of the course: "patience = K: terminate training when validation loss has no improvement in
the past K epochs; min_delta = 0.01: only an improvement greater than 0.01 counts".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import load
from ..exercises import check
from ..models import mlp
from ..seeds import seed_everything
from ..training import History, evaluate, fit

MODES = ("min", "max")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Attributes after each :meth:`step`: ``best`` (best value so far), ``best_epoch`` (its 0-based
    index, -1 before any), ``wait`` (epochs since it), ``stopped_epoch`` (index of the epoch that
    stopped training, or None), ``stop_reason``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        min_delta: float = 0.0,
        patience: int = 0,
        restore_best_weights: bool = False,
        baseline: float | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r} "
                             "(use 'min' for a loss, 'max' for an accuracy)")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"EarlyStopping patience must be an integer >= 0 (epochs to wait), got {patience!r}")
        if not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping min_delta must be a finite number, got {min_delta!r}")
        if baseline is not None and not math.isfinite(baseline):
            raise ValueError(f"EarlyStopping baseline must be finite or None, got {baseline!r}")
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (also done at the start of each ``fit``)."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.epoch = -1
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.restored = False

    def is_improvement(self, value: float, reference: float) -> bool:
        """True when ``value`` beats ``reference`` by more than ``min_delta`` (strictly)."""
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def step(self, value: float, model: torch.nn.Module | None = None) -> bool:
        """Record the next epoch's ``value``; return True when training should stop now.

        With ``restore_best_weights`` and a ``model``, the best weights are copied on improvement and
        put back into the model when this call decides to stop.
        """
        value = float(value)
        self.epoch += 1
        if self.stopped_epoch is not None:
            return True
        if not math.isfinite(value):
            self.stopped_epoch = self.epoch
            self.stop_reason = f"{self.monitor} became {value} at epoch {self.epoch}"
            self._restore(model)
            return True
        self.wait += 1
        if self.is_improvement(value, self.best):
            self.best, self.best_epoch = value, self.epoch
            if self.restore_best_weights and model is not None:
                self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.baseline is None or self.is_improvement(value, self.baseline):
                self.wait = 0
            return False
        if self.wait >= self.patience and self.epoch > 0:
            self.stopped_epoch = self.epoch
            self.stop_reason = (f"no improvement of {self.monitor} by more than {self.min_delta:g} for "
                                f"{self.wait} epoch(s); best {self.best:.4g} at epoch {self.best_epoch}")
            self._restore(model)
            return True
        return False

    def _restore(self, model: torch.nn.Module | None) -> None:
        if self.restore_best_weights and model is not None and self.best_weights is not None:
            model.load_state_dict(copy.deepcopy(self.best_weights))
            self.restored = True

    # --- the Callback side -------------------------------------------------------------------
    def on_train_begin(self, state: TrainState) -> None:
        self.reset()

    def on_epoch_end(self, state: TrainState) -> None:
        if self.monitor not in state.logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r} but fit logs only "
                           f"{sorted(state.logs)}: pick one of those")
        if self.step(state.logs[self.monitor], state.model):
            state.stop_training = True
            state.stop_reason = self.stop_reason

    def on_train_end(self, state: TrainState) -> None:
        if not self.restored:
            self._restore(state.model)
        state.history.best_epoch = self.best_epoch

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, min_delta={self.min_delta:g}, "
                f"patience={self.patience}, restore_best_weights={self.restore_best_weights}, "
                f"baseline={self.baseline})")


# =================================================================================================
# Lesson 02: early stopping on a real validation curve
# =================================================================================================


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


def early_stopping_experiment(
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
) -> History:
    """An MLP (2 hidden layers of ``width``) on MNIST-1D that overfits, with early stopping on ``monitor``
    ("val_loss" or "val_acc"; ``patience=None``: no early stopping)."""
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed)
    model = mlp(data.n_features, [width, width], data.n_classes)
    cbs = list(callbacks)
    if patience is not None:
        cbs.insert(0, EarlyStopping(monitor=monitor, mode=MODE_OF[monitor], patience=int(patience),
                                    min_delta=min_delta, restore_best_weights=restore_best_weights))
    return fit(model, data, epochs=epochs, lr=lr, batch_size=64, device=device, callbacks=cbs, seed=seed,
               config={"patience": patience, "min_delta": min_delta, "monitor": monitor,
                       "restore": restore_best_weights})


def long_run(*, epochs: int = 60, width: int = 512, device: str = "cpu", seed: int | None = None) -> LongRun:
    """Train without early stopping, recording test accuracy per epoch (the data every policy is replayed on)."""
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed)
    rec = TestAccuracy(data.x_test, data.y_test)
    h = early_stopping_experiment(patience=None, epochs=epochs, width=width, device=device, seed=seed,
                                  callbacks=[rec])
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
                        restored, run.test_acc[epochs_run - 1], 1 - epochs_run / run.epochs,
                        run.reference_acc - restored)


PATIENCES = (0, 1, 2, 3, 5, 8, 12, 20)


def patience_sweep(run: LongRun, patiences: Sequence[int] = PATIENCES, min_delta: float = 0.0,
                   monitor: str = "val_loss") -> list[PolicyResult]:
    return [evaluate_policy(run, p, min_delta, monitor) for p in patiences]


def min_delta_sweep(run: LongRun, patience: int = 5, min_deltas: Sequence[float] = (0.0, 0.001, 0.01, 0.05),
                    monitor: str = "val_loss") -> list[PolicyResult]:
    return [evaluate_policy(run, patience, d, monitor) for d in min_deltas]


def claims(run: LongRun, sweeps: dict[str, list[PolicyResult]], deltas: list[PolicyResult], live_stop: int | None,
           replay_stop: int | None, K: int = 5) -> Claims:
    """Lesson 02's claims table, each verdict computed from this run. ``sweeps`` maps monitor -> sweep."""
    c = Claims("02 early stopping")
    h = run.history
    b = run.best_val_epoch
    c.add("Validation loss starts to get bigger at some point (the signal to stop)", "seed 004",
          f"val loss lowest at epoch {b} ({h.val_loss[b]:.3f}), {h.val_loss[-1]:.3f} at epoch {run.epochs - 1}",
          b < run.epochs - 1 and h.val_loss[-1] - h.val_loss[b] > 0.05)
    pk = next(r for r in sweeps["val_loss"] if r.patience == K)
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
    for monitor, sweep in sweeps.items():
        r = next(x for x in sweep if x.patience == K)
        c.add(f"Early stopping on {monitor} saves compute at little cost in accuracy (≤ 1 point)", "lesson",
              f"patience {K}: {r.compute_saved:.0%} of {run.epochs} epochs saved; test accuracy "
              f"{r.test_acc_restored:.3f} vs {run.reference_acc:.3f} for the full run",
              r.compute_saved > 0.2 and r.acc_lost <= 0.01)
    c.add("Restoring the best weights beats keeping the last ones", "lesson",
          f"val_loss, patience {K}: test accuracy {pk.test_acc_restored:.3f} restored vs {pk.test_acc_last:.3f} last",
          pk.test_acc_restored >= pk.test_acc_last)
    c.add("A replayed curve stops where live training stops (training is deterministic)", "lesson",
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


def plot_patience_sweep(sweeps: dict[str, list[PolicyResult]]):
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


def make_panel():
    """Lesson 02's live panel: patience, min_delta, monitor, restore best weights, max epochs, width."""
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
    return LivePanel(early_stopping_experiment, knobs, title="Early stopping: an overfitting MLP on MNIST-1D")


# --- exercises ---------------------------------------------------------------------------------
EXERCISE_CURVE = (0.90, 0.70, 0.69, 0.68, 0.71, 0.60)


def check_stop_epoch(answer: int | None) -> bool:
    """Exercise 1: with min_delta=0.05 and patience=3, after which epoch (0-based) does training stop on
    EXERCISE_CURVE? (None if it never stops.)"""
    es = replay(EXERCISE_CURVE, patience=3, min_delta=0.05)
    return check(answer, es.stopped_epoch,
                 praise="0.69 and 0.68 improve on 0.70 by less than 0.05, 0.71 is worse: three epochs without "
                        "improvement, so it stops after epoch 4 — and never sees the 0.60.",
                 hint="An improvement must beat the best so far by MORE than min_delta. Count the epochs since the "
                      "last real improvement.")


def check_restored_epoch(answer: int) -> bool:
    """Exercise 2: in exercise 1, the weights of which epoch does restore_best_weights put back?"""
    es = replay(EXERCISE_CURVE, patience=3, min_delta=0.05)
    return check(answer, es.best_epoch, praise="The last real improvement was epoch 1 (0.70).",
                 hint="It restores the epoch of the best value that counted as an improvement.")


def check_epochs_run(answer: int, sweep: list[PolicyResult], patience: int = 5) -> bool:
    """Exercise 3: in this run's sweep, how many epochs does early stopping with ``patience`` run?"""
    expected = next(r.epochs_run for r in sweep if r.patience == patience)
    return check(answer, expected, praise=f"Best epoch + {patience} epochs of waiting + 1 (epochs count from 0).",
                 hint=f"Read the 'epochs' column of the row with patience {patience}; it is the best epoch + "
                      f"{patience} + 1.")
