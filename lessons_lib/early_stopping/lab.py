"""Lesson 02 · the apparatus: real overfitting runs, stopping policies replayed on them, the live panel, the
claims table and the figures. The rules themselves are in ``reference.py``.

Training is deterministic for a seed, so replaying the validation curve of one long run through
:class:`~lessons_lib.early_stopping.reference.EarlyStopping` gives exactly where a live run with the same
settings stops (the lesson checks it): one long run prices every patience and ``min_delta``. The yardstick is the
long run itself at its last epoch — what training for the whole budget hands back — not an epoch picked by looking
at the results. Several long runs (replicate seeds) give every price a 95% interval, paired run by run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from functools import partial

import numpy as np
import torch

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import load
from ..history import History
from ..models import mlp
from ..seeds import replicate_seeds, seed_everything
from ..stats import Interval, mean_interval, paired_interval, verdict
from ..training import evaluate, fit
from ..validate import BadArgument, check_choice, check_float, check_int
from .plots import plot_curve_and_stop, plot_patience_sweep  # noqa: F401  (the notebook calls lab.plot_*)
from .reference import EarlyStopping

N_SEEDS = 6  # long runs by default (the size knob: more runs, narrower intervals)
EPOCHS, WIDTH = 40, 256  # the budget and the network: two hidden layers of WIDTH overfit MNIST-1D well within it


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
    seed: int | None = None

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
    def full_test_acc(self) -> float:
        """The yardstick: test accuracy of the weights after the last epoch of the whole budget (no stopping)."""
        return self.test_acc[-1]

    @property
    def rise(self) -> float:
        """How far the validation loss has climbed from its lowest value by the end of the budget."""
        return self.history.val_loss[-1] - min(self.history.val_loss)


@dataclass
class StoppedHistory(History):
    """The History of a panel run, plus what the run hands back: the weights left in the model at the end (with
    ``restore_best_weights``, those of the restored epoch) evaluated on the training and validation sets. Its
    :meth:`summary` (the panel's table and readout) shows those accuracies, so "restore best weights" changes
    what is shown."""

    weights_epoch: int | None = None  # the epoch whose weights the model holds at the end
    restored: bool = False
    final_train_acc: float | None = None  # eval mode, whole training set
    final_val_acc: float | None = None

    def summary(self) -> dict[str, float | int | str | None]:
        s = super().summary()
        if s.get("epochs") and self.final_val_acc is not None:
            s["train_acc"], s["val_acc"] = self.final_train_acc, self.final_val_acc
            what = "restored" if self.restored else "kept"
            s["stop"] = "; ".join(filter(None, [s["stop"], f"weights of epoch {self.weights_epoch} {what}"]))
        return s


def experiment(
    *,
    device: str = "cpu",
    callbacks: Sequence[Callback] = (),
    patience: int | None = 5,
    min_delta: float = 0.0,
    monitor: str = "val_loss",
    restore_best_weights: bool = True,
    epochs: int = EPOCHS,
    width: int = WIDTH,
    lr: float = 1e-3,
    seed: int | None = None,
    early_stopping: type[Callback] = EarlyStopping,
) -> StoppedHistory:
    """An MLP (2 hidden layers of ``width``) on MNIST-1D that overfits, with early stopping on ``monitor``
    ("val_loss" or "val_acc"; ``patience=None``: no early stopping). ``early_stopping`` is the class used: the
    reference or the learner's own, built as ``early_stopping(monitor=, mode=, patience=, min_delta=,
    restore_best_weights=)``. The returned history also holds the accuracies of the weights the run hands back
    (:class:`StoppedHistory`)."""
    monitor = check_choice(monitor, "monitor", MODE_OF)
    if patience is not None:
        patience = check_int(patience, "patience", low=0, fix="epochs without improvement to wait, or None for no "
                                                              "early stopping")
    min_delta = check_float(min_delta, "min_delta", fix="the smallest improvement that counts, e.g. 0.01")
    restore_best_weights = _check_flag(restore_best_weights, "restore_best_weights")
    epochs = check_int(epochs, "epochs", low=1, fix="the budget: the most epochs to train")
    width = check_int(width, "width", low=1, fix="units per hidden layer, e.g. 256")
    if not (isinstance(early_stopping, type) and issubclass(early_stopping, Callback)):
        raise BadArgument(f"early_stopping={early_stopping!r:.60}: must be an early-stopping class (a Callback "
                          "subclass, such as EarlyStopping or your MyEarlyStopping), passed itself, not an instance")
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed)
    model = mlp(data.n_features, [width, width], data.n_classes)
    cbs = list(callbacks)
    es = None
    if patience is not None:
        es = early_stopping(monitor=monitor, mode=MODE_OF[monitor], patience=patience, min_delta=min_delta,
                            restore_best_weights=restore_best_weights)
        cbs.insert(0, es)
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=64, device=device, callbacks=cbs, seed=seed,
            config={"patience": patience, "min_delta": min_delta, "monitor": monitor, "restore": restore_best_weights})
    restored = bool(es is not None and restore_best_weights and getattr(es, "best_weights", None) is not None)
    d = data.to(next(model.parameters()).device)
    return StoppedHistory(**{f.name: getattr(h, f.name) for f in fields(History)},
                          weights_epoch=int(es.best_epoch) if restored else len(h) - 1, restored=restored,
                          final_train_acc=evaluate(model, d.x_train, d.y_train)[1],
                          final_val_acc=evaluate(model, d.x_val, d.y_val)[1])


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise BadArgument(f"{name}={value!r:.60}: must be True or False")
    return bool(value)


def _check_values(values: object, name: str = "values") -> list[float]:
    """A recorded curve: a non-empty sequence of numbers, one per epoch (NaN and inf pass: see reference.py)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray, torch.Tensor)):
        raise BadArgument(f"{name}={values!r:.60}: must be a sequence of numbers, one per epoch, e.g. "
                          "run.history.val_loss")
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=object)
    if arr.ndim != 1 or len(arr) == 0:
        raise BadArgument(f"{name}={values!r:.60}: must be a non-empty list of numbers, one per epoch "
                          f"(got shape {arr.shape})")
    for i, v in enumerate(arr):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise BadArgument(f"{name}[{i}]={v!r:.60}: must be a number (the epoch's monitored value)")
    return [float(v) for v in arr]


def _check_runs(runs: object, at_least: int = 1) -> list[LongRun]:
    if isinstance(runs, LongRun) or not isinstance(runs, Sequence) or not all(isinstance(r, LongRun) for r in runs):
        raise BadArgument(f"runs={runs!r:.60}: must be a list of long runs, as lab.long_runs() returns")
    if len(runs) < at_least:
        raise BadArgument(f"runs has {len(runs)} long run(s): at least {at_least} are needed (an interval needs 2 "
                          "runs); lab.long_runs(n_seeds=...) trains more")
    return list(runs)


def _check_run(run: object) -> LongRun:
    if not isinstance(run, LongRun):
        raise BadArgument(f"run={run!r:.60}: must be one long run (lab.long_run(), or one of lab.long_runs())")
    return run


def long_run(*, epochs: int = EPOCHS, width: int = WIDTH, device: str = "cpu", seed: int | None = None) -> LongRun:
    """Train without early stopping, recording test accuracy per epoch (the data every policy is replayed on)."""
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed)
    rec = TestAccuracy(data.x_test, data.y_test)
    h = experiment(patience=None, epochs=epochs, width=width, device=device, seed=seed, callbacks=[rec])
    return LongRun(h, rec.values, seed)


def long_runs(n_seeds: int = N_SEEDS, *, epochs: int = EPOCHS, width: int = WIDTH, device: str = "cpu",
              seed: int | None = None) -> list[LongRun]:
    """``n_seeds`` long runs, one per replicate seed of the course seed (each its own split, initial weights and
    batch order)."""
    n_seeds = check_int(n_seeds, "n_seeds", low=2, fix="the number of long runs; an interval needs at least 2")
    return [long_run(epochs=epochs, width=width, device=device, seed=s)
            for s in replicate_seeds(n_seeds, stream=1, seed=seed)]


def replay(values: Sequence[float], **kwargs) -> EarlyStopping:
    """Feed a recorded curve to ``EarlyStopping(**kwargs)`` until it stops; return the callback (its
    ``stopped_epoch`` is None if it never stops). Training is deterministic, so this is exactly where a
    live run with the same settings stops (the lesson checks that)."""
    es = EarlyStopping(**kwargs)
    for v in _check_values(values):
        if es.step(v):
            break
    return es


def trace(values: Sequence[float], **kwargs) -> str:
    """A table of what ``EarlyStopping(**kwargs)`` sees and decides at each value, for teaching."""
    es = EarlyStopping(**kwargs)
    values = _check_values(values)
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
    full_test_acc: float  # the yardstick: the long run's test accuracy after its last epoch

    @property
    def compute_saved(self) -> float:
        """Fraction of the long run's epochs not run."""
        return 1 - self.epochs_run / self.budget

    @property
    def acc_lost(self) -> float:
        """Test accuracy given up against the yardstick, with the best weights restored (0.01 is one point)."""
        return self.full_test_acc - self.test_acc_restored

    @property
    def acc_lost_last(self) -> float:
        """The same with the last weights kept (restore_best_weights=False)."""
        return self.full_test_acc - self.test_acc_last


def evaluate_policy(run: LongRun, patience: int, min_delta: float = 0.0, monitor: str = "val_loss") -> PolicyResult:
    """Replay ``EarlyStopping(monitor, patience, min_delta)`` on ``run`` and account for it against
    :attr:`LongRun.full_test_acc` (all epochs trained, the last weights: no stopping at all)."""
    run, monitor = _check_run(run), check_choice(monitor, "monitor", MODE_OF)
    values = getattr(run.history, monitor)
    es = replay(values, monitor=monitor, mode=MODE_OF[monitor], patience=patience, min_delta=min_delta)
    epochs_run = (es.stopped_epoch + 1) if es.stopped_epoch is not None else run.epochs
    return PolicyResult(monitor, patience, min_delta, epochs_run, es.stopped_epoch is not None, es.best_epoch,
                        run.test_acc[es.best_epoch], run.test_acc[epochs_run - 1], run.epochs, run.full_test_acc)


@dataclass
class PolicyStats:
    """One stopping policy replayed on several long runs; ``results[i]`` is run ``i`` (so two policies' results
    are paired run by run)."""

    results: list[PolicyResult]

    @property
    def monitor(self) -> str:
        return self.results[0].monitor

    @property
    def patience(self) -> int:
        return self.results[0].patience

    @property
    def min_delta(self) -> float:
        return self.results[0].min_delta

    @property
    def epochs_run(self) -> Interval:
        return mean_interval([r.epochs_run for r in self.results])

    @property
    def saved(self) -> Interval:
        """Fraction of the budget not run."""
        return mean_interval([r.compute_saved for r in self.results])

    @property
    def lost(self) -> Interval:
        """Yardstick − restored weights' test accuracy, paired run by run."""
        return paired_interval([r.full_test_acc for r in self.results], [r.test_acc_restored for r in self.results])

    @property
    def lost_last(self) -> Interval:
        """Yardstick − last weights' test accuracy (restore_best_weights=False), paired run by run."""
        return paired_interval([r.full_test_acc for r in self.results], [r.test_acc_last for r in self.results])

    @property
    def restore_gain(self) -> Interval:
        """Restored − last weights' test accuracy, paired run by run."""
        return paired_interval([r.test_acc_restored for r in self.results], [r.test_acc_last for r in self.results])


PATIENCES = (0, 1, 2, 3, 5, 8, 12, 20)


def patience_sweep(run: LongRun, patiences: Sequence[int] = PATIENCES, min_delta: float = 0.0,
                   monitor: str = "val_loss") -> list[PolicyResult]:
    """One :class:`PolicyResult` per patience, replayed on ``run``."""
    patiences = _check_list(patiences, "patiences")
    return [evaluate_policy(run, p, min_delta, monitor) for p in patiences]


@dataclass
class PatienceSweeps:
    """A patience sweep monitoring the validation loss and one monitoring the validation accuracy: of one run
    (rows are :class:`PolicyResult`) or of several (rows are :class:`PolicyStats`)."""

    val_loss: list
    val_acc: list

    def items(self) -> Iterator[tuple[str, list]]:
        """(monitor, sweep) pairs, loss first."""
        yield "val_loss", self.val_loss
        yield "val_acc", self.val_acc

    def at(self, patience: int, monitor: str = "val_loss"):
        """The row of ``patience`` in the sweep of ``monitor``."""
        rows = getattr(self, check_choice(monitor, "monitor", ("val_loss", "val_acc")))
        row = next((r for r in rows if r.patience == patience and not isinstance(patience, bool)), None)
        if row is None:
            raise BadArgument(f"patience={patience!r}: not in this sweep; it has patience "
                              f"{', '.join(str(r.patience) for r in rows)}")
        return row


def _check_list(values: object, name: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)) or len(values) == 0:
        raise BadArgument(f"{name}={values!r:.60}: must be a non-empty list of settings, e.g. (0, 1, 3, 5)")
    return list(values)


def patience_sweeps(run: LongRun, patiences: Sequence[int] = PATIENCES) -> PatienceSweeps:
    """:func:`patience_sweep` on ``run`` monitoring val_loss and then val_acc."""
    return PatienceSweeps(patience_sweep(run, patiences, monitor="val_loss"),
                          patience_sweep(run, patiences, monitor="val_acc"))


def policy_stats(runs: Sequence[LongRun], patience: int, min_delta: float = 0.0,
                 monitor: str = "val_loss") -> PolicyStats:
    """One policy replayed on every run."""
    runs = _check_runs(runs)
    return PolicyStats([evaluate_policy(r, patience, min_delta, monitor) for r in runs])


def patience_study(runs: Sequence[LongRun], patiences: Sequence[int] = PATIENCES) -> PatienceSweeps:
    """Every patience, both monitors, replayed on every run (rows: :class:`PolicyStats`)."""
    runs, patiences = _check_runs(runs), _check_list(patiences, "patiences")
    return PatienceSweeps(*[[policy_stats(runs, p, monitor=m) for p in patiences] for m in ("val_loss", "val_acc")])


def min_delta_sweep(runs: Sequence[LongRun], patience: int = 5, min_deltas: Sequence[float] = (0.0, 0.001, 0.01, 0.05),
                    monitor: str = "val_loss") -> list[PolicyStats]:
    """One :class:`PolicyStats` per ``min_delta``, at a fixed patience."""
    runs, min_deltas = _check_runs(runs), _check_list(min_deltas, "min_deltas")
    return [policy_stats(runs, patience, d, monitor) for d in min_deltas]


def stop_epochs(values: Sequence[float], patiences: Sequence[int], **kwargs) -> list[int | None]:
    """Where the reference stops on ``values`` with each patience (None: it never stops); ``kwargs`` the other
    settings of :class:`EarlyStopping`."""
    values = _check_values(values)
    return [replay(values, patience=p, **kwargs).stopped_epoch for p in patiences]


K = 5  # the patience the claims are about
SAVES = 0.2  # "saves compute": more than 20% of the budget's epochs not run
COSTS = 0.01  # "little cost in accuracy": at most 1 point of test accuracy below the full run
RISES = 0.1  # "the validation loss gets bigger": by more than 0.1 nats from its lowest value to the end


def _pts(i: Interval) -> str:
    return i.format(".1f", scale=100, unit=" pts")


def pm(i: Interval, fmt: str = ".1f", scale: float = 1.0) -> str:
    """``mean ± half-width`` of a 95% interval, for a table whose header says how many runs."""
    if not isinstance(i, Interval):
        raise BadArgument(f"i={i!r:.60}: must be an Interval (e.g. a PolicyStats' .lost or .epochs_run)")
    return f"{i.mean * scale:{fmt}} ± {i.half_width * scale:{fmt}}"


def claims(runs: Sequence[LongRun], study: PatienceSweeps, live_stop: int | None, replay_stop: int | None) -> Claims:
    """Lesson 02's claims table: every verdict from a 95% interval over the long runs (paired run by run: the
    yardstick and a policy are the same training run), against the threshold the claim states (``live_stop``:
    where the live run with the learner's early stopping stopped; ``replay_stop``: where the reference stops on
    the first run's recorded curve)."""
    runs = _check_runs(runs, at_least=2)
    c = Claims("02 early stopping")
    n, budget = len(runs), runs[0].epochs
    rise = mean_interval([r.rise for r in runs])
    c.add(f"Validation loss starts to get bigger at some point: by the end of the budget it is more than {RISES:g} "
          "above its lowest value", "seed 004",
          f"last epoch − lowest val loss: {rise.format('.3f')}; lowest at epoch "
          f"{min(r.best_val_epoch for r in runs)}–{max(r.best_val_epoch for r in runs)} of {budget}",
          verdict(rise, RISES))
    for monitor, _ in study.items():
        s = study.at(K, monitor)
        c.add(f"Early stopping on {monitor} (patience {K}) saves compute: more than {SAVES:.0%} of the epochs",
              "lesson", f"share of the {budget} epochs not run: {s.saved.format('.2f')}", verdict(s.saved, SAVES))
        c.add(f"…at little cost: early stopping on {monitor} loses at most {COSTS * 100:.0f} point of test accuracy "
              "(restored weights) against the full run's last epoch", "lesson",
              f"full run − early stopped (same runs): {_pts(s.lost)}", verdict(s.lost, COSTS, "below"))
    s, k1 = study.at(K, "val_loss"), study.at(1, "val_loss")
    c.add(f"Restoring the best weights beats keeping the last ones (val_loss, patience {K})", "lesson",
          f"test accuracy, restored − last weights (same runs): {_pts(s.restore_gain)}",
          verdict(s.restore_gain, 0.0))
    wait = paired_interval([r.test_acc_restored for r in s.results], [r.test_acc_restored for r in k1.results])
    c.add(f"Patience waits out noise: with patience {K} the restored weights beat those of patience 1", "lesson",
          f"test accuracy, patience {K} − patience 1 (val_loss, same runs): {_pts(wait)}", verdict(wait, 0.0))
    c.add("Live training with your early stopping stops where the reference stops on the recorded curve "
          "(training is deterministic)", "lesson",
          f"live run stopped after epoch {live_stop}, replay after {replay_stop} (first of the {n} runs)",
          live_stop == replay_stop)
    return c


def make_panel(early_stopping: type[Callback] = EarlyStopping):
    """Lesson 02's live panel: patience, min_delta, monitor, restore best weights, max epochs, width; runs with
    the ``early_stopping`` class given (the learner's, once it passes its check). Its table shows the accuracies
    of the weights each run hands back (the restored ones when "restore best weights" is on)."""
    if not (isinstance(early_stopping, type) and issubclass(early_stopping, Callback)):
        raise BadArgument(f"early_stopping={early_stopping!r:.60}: must be an early-stopping class (a Callback "
                          "subclass, such as EarlyStopping or your MyEarlyStopping), passed itself, not an instance")
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
        "epochs": w.IntSlider(value=EPOCHS, min=5, max=200, description="max epochs", style=style),
        "width": w.SelectionSlider(options=[64, 128, 256, 512, 1024], value=WIDTH, description="width", style=style),
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
