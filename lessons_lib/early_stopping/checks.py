"""Lesson 02 · checks: the learner's early stopping against Keras 3's semantics, and the questions.

The learner writes ``MyEarlyStopping``, a :class:`~lessons_lib.callbacks.Callback` with the constructor of
``keras.callbacks.EarlyStopping``. :func:`check_early_stopping` drives it, as ``fit`` does, on hundreds of value
sequences (patience x min_delta x mode x baseline x restore_best_weights) and compares where it stops and which
weights it leaves in the model with :func:`keras_outcome`: Keras 3's rules written as statements about the whole
sequence, not as the state machine of ``reference.py`` (``tests/test_early_stopping_checks.py`` holds both against
the real ``keras.callbacks.EarlyStopping``). The values lie on a grid of eighths, so ``value < best - delta`` and
Keras's ``value + delta < best`` agree to the last bit and a tie is a real tie.

A wrong class is diagnosed by recomputing the outcome with each typical mistake built into the rules
(:data:`MISTAKES`, and any two of them together): the hint names the mistake that reproduces every case, with
the shortest case where it shows.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..callbacks import Callback, TrainState
from ..exercises import CheckResult, Mistake, check_answer, check_code
from ..history import History

if TYPE_CHECKING:
    from .lab import PatienceSweeps, Quiz


# --- Keras 3 EarlyStopping as a declarative spec --------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What early stopping did on one sequence: ``stop_epoch`` (index of the epoch after which training
    stopped, None: it ran to the end) and ``best_epoch`` (the last improvement: the weights restored)."""

    stop_epoch: int | None
    best_epoch: int


MISTAKES: dict[str, str] = {
    "ties": "an improvement must beat the best by MORE than min_delta: you counted a tie (value exactly "
            "best − min_delta, or equal to best) as an improvement. Compare with < in mode 'min' and > in mode "
            "'max', not with ≤ / ≥.",
    "no_delta": "min_delta is ignored: with min_delta > 0 a value must beat the best by more than min_delta to "
                "count (mode 'min': value < best − min_delta).",
    "delta_sign": "min_delta applied with the wrong sign in max mode: in mode 'max' an improvement is "
                  "value > best + min_delta (you used best − min_delta, so smaller gains count).",
    "mode_min": "mode='max' is treated like 'min': for an accuracy an improvement is a LARGER value "
                "(value > best + min_delta); best starts at -inf there, so with the 'min' test nothing ever improves.",
    "best_moves": "best updated even without improvement: best (and best_epoch) change only on an improvement; "
                  "a value that is better by less than min_delta must not move it.",
    "best_last": "best follows the last value: it must stay at the value of the last improvement, so that "
                 "small steps cannot add up unnoticed.",
    "no_reset": "wait is not reset after an improvement: it must count the epochs since the last improvement, "
                "so set it back to 0 when the value improves.",
    "no_reset_count": "wait is not reset after an improvement (it counts every epoch without improvement since the "
                      "start): it must count the epochs since the last improvement, so set it back to 0 when the "
                      "value improves.",
    "stop_on_improvement": "the stop test also runs on an epoch that improved: an improvement never stops training "
                           "(with patience=0 yours stops at once). Return right after handling an improvement.",
    "late": "stops one epoch late (patience off by one): stop as soon as wait reaches patience "
            "(wait >= patience, with wait counting this epoch), not when it exceeds it.",
    "early": "stops one epoch early (patience off by one): wait counts the epochs without improvement "
             "including this one; stop when wait >= patience, not one before.",
    "no_baseline": "the baseline is ignored: with a baseline, an improvement resets wait only when the value also "
                   "beats the baseline (by more than min_delta), so the model must beat the baseline within "
                   "patience epochs.",
}


def _beats(mode: str, min_delta: float, mistakes: frozenset[str]) -> Callable[[float, float], bool]:
    """'a beats b' under the rules (with the given mistakes built in)."""
    d = 0.0 if "no_delta" in mistakes else abs(min_delta)
    if mode == "max":
        d = -d if "delta_sign" in mistakes else d
        return (lambda a, b: a >= b + d) if "ties" in mistakes else (lambda a, b: a > b + d)
    return (lambda a, b: a <= b - d) if "ties" in mistakes else (lambda a, b: a < b - d)


def keras_outcome(values: Sequence[float], patience: int, min_delta: float = 0.0, mode: str = "min",
                  baseline: float | None = None, mistakes: frozenset[str] = frozenset()) -> Outcome:
    """Keras 3's EarlyStopping on ``values``, stated as rules about the whole sequence:

    1. The improvements form a chain: epoch 0 (Keras starts with no best at all, so the first value counts even
       if it is NaN), then each time the first later epoch whose value beats the previous link of the chain by more
       than |min_delta| (nothing beats a NaN, and a NaN beats nothing).
    2. An improvement *resets* the count if there is no baseline or its value also beats the baseline.
    3. Training stops after the first epoch that is not an improvement and lies at least ``patience`` epochs
       after the last reset before it (-1 if there was none): that many epochs in a row brought nothing.
    4. The weights restored are those of the last link of the chain up to the stop.

    ``mistakes`` (names from :data:`MISTAKES`) builds typical errors into the rules, to recognize them.
    """
    beats = _beats(mode, min_delta, mistakes)
    n = len(values)
    if "mode_min" in mistakes and mode == "max":  # best starts at -inf and nothing is below it: no improvement
        links = []
    elif "best_moves" in mistakes:  # compared with the best value seen so far, improvement or not
        pick = max if mode == "max" else min
        links = [e for e in range(n) if e == 0 or beats(values[e], pick(values[:e]))]
    elif "best_last" in mistakes:  # compared with the previous value
        links = [e for e in range(n) if e == 0 or beats(values[e], values[e - 1])]
    else:
        links = [0]  # each link: the first later epoch that beats the previous link
        while later := [e for e in range(links[-1] + 1, n) if beats(values[e], values[links[-1]])]:
            links.append(later[0])
    resets = [i for i in links if baseline is None or "no_baseline" in mistakes or beats(values[i], baseline)]

    def wait(e: int) -> int:  # epochs without a reset, this one included
        if "no_reset" in mistakes:
            return e + 1
        if "no_reset_count" in mistakes:
            return sum(j not in links for j in range(e + 1))
        last = e if "stop_on_improvement" in mistakes and e in resets else max((r for r in resets if r < e), default=-1)
        return e - last

    need = patience + 1 if "late" in mistakes else patience - 1 if "early" in mistakes else patience
    tested = range(n) if "stop_on_improvement" in mistakes else (e for e in range(n) if e not in links)
    stop = next((e for e in tested if wait(e) >= need), None)
    return Outcome(stop, max((i for i in links if stop is None or i <= stop), default=-1))


# --- the cases the learner's class is driven on ----------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One sequence of monitored values with the settings of the early stopping run on it."""

    values: tuple[float, ...]
    patience: int
    min_delta: float = 0.0
    mode: str = "min"
    baseline: float | None = None
    restore_best_weights: bool = True

    @property
    def monitor(self) -> str:
        return "val_loss" if self.mode == "min" else "val_acc"

    def outcome(self, mistakes: frozenset[str] = frozenset()) -> Outcome:
        return keras_outcome(self.values, self.patience, self.min_delta, self.mode, self.baseline, mistakes)

    def final_weights(self, outcome: Outcome) -> int:
        """The epoch whose weights the model holds after training: the best one if restored, else the last run."""
        last = len(self.values) - 1 if outcome.stop_epoch is None else outcome.stop_epoch
        return outcome.best_epoch if self.restore_best_weights else last

    def __str__(self) -> str:
        vals = ", ".join(f"{v:g}" for v in self.values)
        extra = f", baseline={self.baseline:g}" if self.baseline is not None else ""
        return (f"values [{vals}] with mode={self.mode!r}, patience={self.patience}, min_delta={self.min_delta:g}"
                f"{extra}, restore_best_weights={self.restore_best_weights}")


def _stop_text(stop: int | None) -> str:
    return "never stops" if stop is None else f"stops after epoch {stop}"


HAND_MADE = (
    Case((1.0, 0.75, 0.5, 0.25), patience=2, min_delta=0.25),  # two drops of exactly min_delta: ties
    Case((1.0, 0.875, 0.9375, 0.9375, 0.875, 0.5), patience=3),
    Case((1.0, 0.9375, 0.875, 0.8125, 0.75), patience=2, min_delta=0.125),  # a slow descent: steps < min_delta
    Case((0.5, 0.625, 0.6875, 0.75, 0.8125, 0.8125), patience=2, min_delta=0.125, mode="max"),
    Case((1.0, 0.875, 0.9375, 0.96875), patience=2, baseline=0.5),  # improvements that miss the baseline
    Case((1.0, 0.5, 0.75, 0.75, 0.75, 0.25), patience=3, restore_best_weights=False),
)


@cache
def cases(n: int = 400, seed: int = 2) -> tuple[Case, ...]:
    """The hand-made cases, then ``n`` generated ones: random walks on a grid of eighths (plateaus and exact
    ties included) with patience 0-4, min_delta 0, 1/8 or 1/4, both modes, sometimes a baseline."""
    rng = np.random.default_rng(seed)
    out = list(HAND_MADE)
    for i in range(n):
        steps = rng.choice([-3, -2, -1, -1, 0, 0, 1, 2], size=int(rng.integers(2, 15)))
        steps[0] = 0
        walk = 8 + np.cumsum(steps)  # integers; the values are walk / 8
        mode = "max" if i % 2 else "min"
        if mode == "max":
            walk = 16 - walk
        baseline = None if rng.random() < 0.7 else float(rng.integers(walk.min() - 2, walk.max() + 3)) / 8
        out.append(Case(tuple(float(w) / 8 for w in walk), patience=int(rng.integers(0, 5)),
                        min_delta=float(rng.choice([0.0, 0.125, 0.25])), mode=mode, baseline=baseline,
                        restore_best_weights=bool(i % 3)))
    return tuple(out)


def drive(cls: type, case: Case, replace_weights: bool = False) -> tuple[int | None, float]:
    """Run ``cls(...)`` as ``fit`` would on ``case``: a one-weight model holds the epoch number as its weight.
    Return (the epoch after which it set ``state.stop_training``, or None; the weight left in the model after
    ``on_train_end``). The weight changes in place, as an optimizer changes it, unless ``replace_weights``."""
    es = cls(monitor=case.monitor, mode=case.mode, min_delta=case.min_delta, patience=case.patience,
             restore_best_weights=case.restore_best_weights, baseline=case.baseline)
    model = torch.nn.Linear(1, 1, bias=False)
    state = TrainState(model=model, optimizer=None, device=torch.device("cpu"), history=History(),
                       epochs=len(case.values), steps_per_epoch=1)
    es.on_train_begin(state)
    stop = None
    for e, v in enumerate(case.values):
        with torch.no_grad():
            if replace_weights:
                model.weight = torch.nn.Parameter(torch.full((1, 1), float(e)))
            else:
                model.weight.fill_(float(e))
        state.epoch, state.logs = e, {"epoch": e, case.monitor: v}
        es.on_epoch_end(state)
        if state.stop_training:
            stop = e
            break
    es.on_train_end(state)
    return stop, float(model.weight.detach().reshape(-1)[0])


def _shortest(pairs: Sequence[tuple[Case, str]]) -> str:
    """' For example, on <the simplest case>: <what went wrong>.'"""
    case, text = min(pairs, key=lambda p: (len(p[0].values), p[0].baseline is not None, p[0].mode != "min"))
    return f" For example, on {case}: {text}."


def _diagnose_stops(got: dict[Case, int | None]) -> None:
    """Raise Mistake naming the mistake (or pair of mistakes) that reproduces every stop the learner's class made."""
    shows = [(c, f"Keras {_stop_text(c.outcome().stop_epoch)}, yours {_stop_text(got[c])}")
             for c in got if c.outcome().stop_epoch != got[c]]
    for combo in itertools.chain(((m,) for m in MISTAKES), itertools.combinations(MISTAKES, 2)):
        if all(case.outcome(frozenset(combo)).stop_epoch == stop for case, stop in got.items()):
            raise Mistake(" And ".join(MISTAKES[m] for m in combo) + _shortest(shows))
    raise Mistake(f"your early stopping stops at the wrong epoch on {len(shows)} of {len(got)} sequences."
                  + _shortest(shows) + " Trace it by hand: best, wait, and the stop test, one epoch at a time.")


def _diagnose_weights(cls: type, got: dict[Case, float]) -> None:
    """Raise Mistake naming what is wrong with the weights left in the model after training."""
    def expected(c: Case) -> int:
        return c.final_weights(c.outcome())

    bad = [c for c in got if got[c] != expected(c)]
    last = {c: len(c.values) - 1 if c.outcome().stop_epoch is None else c.outcome().stop_epoch for c in got}
    shows = [(c, f"the model should hold the weights of epoch {expected(c)}, yours holds epoch {got[c]:g}")
             for c in bad]
    restoring = [c for c in bad if c.restore_best_weights]
    if restoring and all(got[c] == last[c] for c in restoring):
        if all(drive(cls, c, replace_weights=True)[1] == expected(c) for c in restoring):
            raise Mistake("the kept weights change along with the model: state_dict() returns the live tensors, "
                          "which training updates in place. Keep a copy at each improvement "
                          "(copy.deepcopy(state.model.state_dict())) and load it in on_train_end." + _shortest(shows))
        if all(c.outcome().stop_epoch is None for c in restoring):
            raise Mistake("the best weights are not restored when training runs to the end without stopping: "
                          "Keras 3 restores them in on_train_end either way." + _shortest(shows))
        raise Mistake("restores the last weights, not the best: keep a copy of the weights at each improvement and "
                      "load it back into state.model (load_state_dict) in on_train_end." + _shortest(shows))
    if bad and all(not c.restore_best_weights for c in bad):
        raise Mistake("restores the best weights although restore_best_weights=False: then the model keeps the "
                      "weights of the last epoch run." + _shortest(shows))
    raise Mistake(f"the weights left in the model are wrong on {len(bad)} of {len(got)} sequences." + _shortest(shows)
                  + " Keep a copy of the weights at each improvement, and restore it in on_train_end.")


KERAS_ARGS = dict(monitor="val_loss", mode="min", min_delta=0.0, patience=0, restore_best_weights=False, baseline=None)


def _is_callback_class(cls: Any) -> None:
    """Raise :class:`Mistake` unless ``cls`` is a Callback class whose constructor takes Keras's keywords."""
    if not isinstance(cls, type):
        raise Mistake(f"MyEarlyStopping should be a class (class MyEarlyStopping(Callback): ...), got "
                      f"{type(cls).__name__} {cls!r:.60}. Pass the class itself.")
    if not issubclass(cls, Callback):
        raise Mistake(f"{cls.__name__} should be a subclass of Callback (class {cls.__name__}(Callback): ...), so "
                      "that fit can call it.")
    try:
        inspect.signature(cls).bind(**KERAS_ARGS)
    except TypeError:
        raise Mistake(f"{cls.__name__}'s constructor must take Keras's keywords ({', '.join(KERAS_ARGS)}); "
                      f"yours is {cls.__name__}{inspect.signature(cls)}.") from None
    except ValueError:
        pass


def check_early_stopping(cls: type) -> CheckResult:
    """The learner's early-stopping class against Keras 3 semantics on :func:`cases` (stop epoch and the
    weights left in the model)."""

    def body(cls: type) -> None:
        _is_callback_class(cls)
        runs = {case: drive(cls, case) for case in cases()}
        stops = {case: r[0] for case, r in runs.items()}
        if any(stop != case.outcome().stop_epoch for case, stop in stops.items()):
            _diagnose_stops(stops)
        weights = {case: r[1] for case, r in runs.items()}
        if any(w != case.final_weights(case.outcome()) for case, w in weights.items()):
            _diagnose_weights(cls, weights)

    return check_code(
        "MyEarlyStopping", cls, body, kind="class",
        praise=f"It stops where Keras 3's EarlyStopping stops, and leaves the same weights, on all {len(cases())} "
               "sequences (ties, plateaus, both modes, min_delta, baselines).",
        not_written="Fill in improves, on_epoch_end and on_train_end.")


# --- the questions, answered from the quiz curve and from this run --------------------------------
def _mistaken_answers(found: dict[str, object], right: object) -> dict[object, str]:
    """{wrong answer: hint} from {mistake name: the answer it gives}; answers that collide share the hints."""
    out: dict[object, str] = {}
    for name, value in found.items():
        if value != right:
            out[value] = f"{out[value]} Or: {MISTAKES[name]}" if value in out else MISTAKES[name]
    return out


def check_stop_epoch(answer: int | None, quiz: Quiz) -> CheckResult:
    """After which epoch (0-based) does early stopping with the quiz's settings stop on the quiz's curve?"""
    def outcome(mistakes: frozenset[str] = frozenset()) -> Outcome:
        return keras_outcome(quiz.values, quiz.patience, quiz.min_delta, quiz.mode, mistakes=mistakes)

    right = outcome()
    never = "never"  # an answer of None ("never stops") is compared as this word
    found = {m: never if (s := outcome(frozenset([m])).stop_epoch) is None else s for m in MISTAKES}
    mistakes = {right.stop_epoch + 1: "count the epochs from 0: the first value is epoch 0."} \
        if right.stop_epoch is not None else {}
    mistakes.update(_mistaken_answers(found, right.stop_epoch))
    answer = never if answer is None else answer
    return check_answer(answer, never if right.stop_epoch is None else right.stop_epoch,
                        exercise="stop_epoch", mistakes=mistakes,
                        praise=f"{quiz.patience} epochs in a row without an improvement by more than "
                               f"{quiz.min_delta:g} after the best at epoch {right.best_epoch}: it stops after epoch "
                               f"{right.stop_epoch} and never sees the values after it.",
                        hint="an improvement must beat the best so far by MORE than min_delta; count the epochs "
                             "since the last real improvement, from epoch 0.")


def check_restored_epoch(answer: int, quiz: Quiz) -> CheckResult:
    """Which epoch's weights does restore_best_weights put back, on the quiz's curve and settings?"""
    right = keras_outcome(quiz.values, quiz.patience, quiz.min_delta, quiz.mode)
    seen = quiz.values[: len(quiz.values) if right.stop_epoch is None else right.stop_epoch + 1]
    pick = np.argmax if quiz.mode == "max" else np.argmin
    mistakes: dict[object, str] = {right.best_epoch + 1: "count the epochs from 0: the first value is epoch 0."}
    mistakes[int(pick(seen))] = (f"{seen[int(pick(seen))]:g} is the best value seen, but it did not beat the best "
                                 f"by more than min_delta = {quiz.min_delta:g}: not an improvement, so best_epoch "
                                 "did not move.")
    if right.stop_epoch is not None:
        mistakes[right.stop_epoch] = ("that is the last epoch run: restore_best_weights puts back the weights of the "
                                      "last improvement instead.")
    if right.stop_epoch is not None and int(pick(quiz.values)) > right.stop_epoch:
        mistakes[int(pick(quiz.values))] = "training stopped before that epoch: its weights were never seen."
    mistakes.pop(right.best_epoch, None)
    return check_answer(answer, right.best_epoch, exercise="restored_epoch", mistakes=mistakes,
                        praise=f"Epoch {right.best_epoch} ({quiz.values[right.best_epoch]:g}) was the last real "
                               "improvement; nothing after it beat it by more than min_delta.",
                        hint="it restores the epoch of the last value that counted as an improvement.")


def check_epochs_run(answer: int, sweeps: PatienceSweeps, patience: int = 5) -> CheckResult:
    """How many epochs does early stopping on val_loss with ``patience`` run, in this run's sweep?"""
    row = sweeps.at(patience, "val_loss")
    mistakes: dict[object, str] = {
        row.budget: "that is the whole budget; early stopping ran fewer epochs.",
        row.epochs_run - 1: "that is the index of the last epoch run; epochs count from 0, so the number of "
                            "epochs run is one more.",
    }
    mistakes.pop(row.epochs_run, None)
    how = (f"best epoch {row.best_epoch} + {patience} epochs of waiting + 1 (epochs count from 0)" if row.stopped
           else "it never stopped: the whole budget")
    return check_answer(answer, row.epochs_run, exercise="epochs_run", mistakes=mistakes,
                        praise=f"{row.epochs_run} epochs: {how}.",
                        hint=f"read the 'epochs' column of the val_loss row with patience {patience}.")
