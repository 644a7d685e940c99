"""Lesson 02's checks: the declarative spec (``checks.keras_outcome``) and the reference ``EarlyStopping`` held
against the real ``keras.callbacks.EarlyStopping`` on sequences Hypothesis generates; the check of the learner's
class on planted bugs, each caught with its hint; the questions."""

from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib.callbacks import Callback
from lessons_lib.early_stopping import checks, lab, reference
from lessons_lib.early_stopping.checks import Case

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")


class _KerasModel:
    """What keras.callbacks.EarlyStopping touches of a model: stop_training and get/set_weights. Its one
    'weight' is the number of the epoch that produced it."""

    def __init__(self) -> None:
        self.stop_training = False
        self.weight = -1

    def get_weights(self) -> list[int]:
        return [self.weight]

    def set_weights(self, weights: list[int]) -> None:
        self.weight = weights[0]


def keras_run(case: Case) -> tuple[int | None, float]:
    """(epoch after which Keras 3 stops or None, the epoch whose weights the model holds at the end)."""
    model = _KerasModel()
    es = keras.callbacks.EarlyStopping(monitor=case.monitor, mode=case.mode, min_delta=case.min_delta,
                                       patience=case.patience, baseline=case.baseline,
                                       restore_best_weights=case.restore_best_weights)
    es.set_model(model)
    es.on_train_begin()
    stop = None
    for epoch, value in enumerate(case.values):
        model.weight = epoch
        es.on_epoch_end(epoch, {case.monitor: value})
        if model.stop_training:
            stop = epoch
            break
    es.on_train_end()
    return stop, float(model.weight)


def spec_run(case: Case) -> tuple[int | None, float]:
    out = case.outcome()
    return out.stop_epoch, float(case.final_weights(out))


# values on a grid of eighths (exact in float32 and float64, so a tie is a tie for every implementation):
# uniform draws, and random walks with plateaus
eighths = st.integers(-24, 24).map(lambda k: k / 8)
walks = st.lists(st.integers(-3, 2), min_size=1, max_size=20).map(lambda s: [float(v) / 8 for v in np.cumsum(s)])
sequences = st.one_of(st.lists(eighths, min_size=1, max_size=20), walks)
case_strategy = st.builds(
    lambda values, **kw: Case(tuple(values), **kw),
    sequences,
    patience=st.integers(0, 6),
    min_delta=st.sampled_from([0.0, 0.125, 0.25, 0.5, -0.25]),
    mode=st.sampled_from(["min", "max"]),
    baseline=st.none() | eighths,
    restore_best_weights=st.booleans(),
)


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(case_strategy)
def test_the_declarative_spec_is_keras_3(case):
    assert spec_run(case) == keras_run(case)


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(case_strategy)
def test_the_reference_is_keras_3(case):
    assert checks.drive(reference.EarlyStopping, case) == keras_run(case)


# NaN and infinities: a NaN is never an improvement (Keras 3 has no NaN rule of its own), -inf beats everything
non_finite = st.lists(st.one_of(eighths, st.sampled_from([math.nan, math.inf, -math.inf])), min_size=1, max_size=12)
non_finite_cases = st.builds(
    lambda values, **kw: Case(tuple(values), **kw),
    non_finite,
    patience=st.integers(0, 4),
    min_delta=st.sampled_from([0.0, 0.25]),
    mode=st.sampled_from(["min", "max"]),
    baseline=st.none() | eighths,
    restore_best_weights=st.booleans(),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(non_finite_cases)
def test_nan_and_infinities_follow_keras_3(case):
    assert spec_run(case) == keras_run(case)
    assert checks.drive(reference.EarlyStopping, case) == keras_run(case)


def test_a_nan_does_not_stop_at_once():
    case = Case((1.0, 0.5, math.nan, math.nan, 0.25), patience=2)
    assert keras_run(case) == spec_run(case) == checks.drive(reference.EarlyStopping, case) == (3, 1.0)
    never = Case((math.nan, math.nan, math.nan), patience=5)  # nothing ever improves: epoch 0's weights stay
    assert keras_run(never) == spec_run(never) == checks.drive(reference.EarlyStopping, never) == (None, 0.0)


def test_every_case_of_the_check_is_keras_3():
    cases = checks.cases()
    assert len(cases) > 400
    assert all(spec_run(c) == keras_run(c) for c in cases)
    # the cases reach every corner: ties, each patience, both modes, baselines, stopping and not
    assert {c.patience for c in cases} == {0, 1, 2, 3, 4} and {c.mode for c in cases} == {"min", "max"}
    assert sum(c.baseline is not None for c in cases) > 50
    stops = [c.outcome().stop_epoch for c in cases]
    assert 50 < sum(s is None for s in stops) < len(cases) - 50


def test_quiz_matches_keras():
    q = lab.QUIZ
    case = Case(q.values, q.patience, q.min_delta, q.mode)
    assert keras_run(case) == (4, 1.0) == spec_run(case)


# --- the check of the learner's class ------------------------------------------------------------
def learner_class(*bugs: str) -> type:
    """A learner's MyEarlyStopping, written the way the notebook asks, with ``bugs`` planted."""

    class Planted(Callback):
        def __init__(self, monitor="val_loss", mode="min", min_delta=0.0, patience=0, restore_best_weights=False,
                     baseline=None):
            self.monitor, self.mode, self.min_delta, self.patience = monitor, mode, abs(min_delta), patience
            self.restore_best_weights, self.baseline = restore_best_weights, baseline

        def on_train_begin(self, state):
            self.best = math.inf if self.mode == "min" else -math.inf
            self.best_epoch, self.wait, self.best_weights = -1, 0, None

        def improves(self, value, ref):
            d = 0.0 if "no_delta" in bugs else self.min_delta
            if self.mode == "max" and "mode_min" not in bugs:
                d = -d if "delta_sign" in bugs else d
                return value >= ref + d if "ties" in bugs else value > ref + d
            return value <= ref - d if "ties" in bugs else value < ref - d

        def on_epoch_end(self, state):
            if "crash" in bugs:
                return 1 / 0
            value = state.logs[self.monitor]
            self.wait += 1
            better = self.improves(value, self.best)
            if better:
                self.best, self.best_epoch = value, state.epoch
                if self.restore_best_weights or "restore_always" in bugs:
                    weights = state.model.state_dict()
                    self.best_weights = weights if "no_copy" in bugs else copy.deepcopy(weights)
                beats_baseline = self.baseline is None or "no_baseline" in bugs or self.improves(value, self.baseline)
                if beats_baseline and "no_reset" not in bugs:
                    self.wait = 0
            if "best_moves" in bugs:
                self.best = (min if self.mode == "min" else max)(self.best, value)
            if better and "stop_on_improvement" not in bugs:
                return
            if self.wait >= self.patience + {"late": 1, "early": -1}.get(next(iter(bugs), ""), 0):
                state.stop_training = True
                if "restore_at_stop" in bugs and self.best_weights is not None:
                    state.model.load_state_dict(self.best_weights)

        def on_train_end(self, state):
            if {"restore_at_stop", "no_restore"} & set(bugs):
                return
            if (self.restore_best_weights or "restore_always" in bugs) and self.best_weights is not None:
                state.model.load_state_dict(self.best_weights)

    return Planted


def test_the_reference_and_a_right_learner_pass(capsys):
    assert checks.check_early_stopping(reference.EarlyStopping).status == "correct"
    assert checks.check_early_stopping(learner_class()).status == "correct"
    assert capsys.readouterr().out.count("✓ Correct.") == 2


def test_the_check_is_fast():
    t0 = time.perf_counter()
    checks.check_early_stopping(learner_class())
    checks.check_early_stopping(learner_class("ties", "late"))  # a wrong class: the diagnosis runs too
    assert time.perf_counter() - t0 < 4.0


def test_a_stub_is_not_written():
    class Stub(learner_class()):
        def on_epoch_end(self, state):
            raise NotImplementedError("write on_epoch_end")

    r = checks.check_early_stopping(Stub)
    assert r.status == "not_written" and "write on_epoch_end" in r.message
    assert r.yours_or(reference.EarlyStopping) is reference.EarlyStopping


def test_a_crash_is_named():
    r = checks.check_early_stopping(learner_class("crash"))
    assert r.status == "wrong" and "ZeroDivisionError" in r.message


@pytest.mark.parametrize("bugs, words", [
    (("ties",), "counted a tie"),
    (("no_delta",), "min_delta is ignored"),
    (("delta_sign",), "wrong sign in max mode"),
    (("mode_min",), "treated like 'min'"),
    (("best_moves",), "best updated even without improvement"),
    (("no_reset",), "wait is not reset after an improvement"),
    (("stop_on_improvement",), "an improvement never stops training"),
    (("late",), "stops one epoch late"),
    (("early",), "stops one epoch early"),
    (("no_baseline",), "the baseline is ignored"),
    (("no_copy",), "state_dict() returns the live tensors"),
    (("no_restore",), "restores the last weights, not the best"),
    (("restore_at_stop",), "runs to the end without stopping"),
    (("restore_always",), "although restore_best_weights=False"),
])
def test_planted_bugs_are_named(bugs, words):
    r = checks.check_early_stopping(learner_class(*bugs))
    assert r.status == "wrong", bugs
    assert words in r.message
    assert "For example, on values [" in r.message  # the shortest sequence where it shows


def test_two_bugs_at_once_are_both_named():
    r = checks.check_early_stopping(learner_class("ties", "no_delta"))
    assert r.status == "wrong"
    assert "counted a tie" in r.message and "min_delta is ignored" in r.message


def test_an_unknown_bug_gets_the_shortest_failing_case():
    class Odd(learner_class()):
        def on_epoch_end(self, state):
            super().on_epoch_end(state)
            if state.epoch == 3:
                state.stop_training = True

    r = checks.check_early_stopping(Odd)
    assert r.status == "wrong" and "stops at the wrong epoch" in r.message and "Keras never stops" in r.message


def test_the_learners_class_trains_the_lesson_network():
    h = lab.experiment(patience=0, epochs=4, width=16, early_stopping=learner_class())
    assert 1 <= len(h) <= 4


# --- the questions ---------------------------------------------------------------------------------
def test_check_stop_epoch():
    q = lab.QUIZ
    assert checks.check_stop_epoch(4, q)
    assert checks.check_stop_epoch(..., q).status == "not_written"
    assert "count the epochs from 0" in checks.check_stop_epoch(5, q).message
    assert "one epoch early" in checks.check_stop_epoch(3, q).message
    assert "wait is not reset" in checks.check_stop_epoch(2, q).message
    never = checks.check_stop_epoch(None, q)
    assert never.status == "wrong" and "min_delta is ignored" in never.message


def test_check_restored_epoch():
    q = lab.QUIZ
    assert checks.check_restored_epoch(1, q)
    assert "not an improvement" in checks.check_restored_epoch(3, q).message
    assert "last epoch run" in checks.check_restored_epoch(4, q).message
    assert "never seen" in checks.check_restored_epoch(5, q).message


def test_check_epochs_run_takes_the_answer_from_the_run():
    row = lab.PolicyResult("val_loss", 5, 0.0, epochs_run=14, stopped=True, best_epoch=8, test_acc_restored=0.6,
                           test_acc_last=0.6, budget=60, full_test_acc=0.6)
    sweeps = lab.PatienceSweeps([row], [])
    assert checks.check_epochs_run(14, sweeps)
    assert "epochs count from 0" in checks.check_epochs_run(13, sweeps).message
    assert "whole budget" in checks.check_epochs_run(60, sweeps).message
    other = lab.PatienceSweeps([lab.PolicyResult(**{**row.__dict__, "epochs_run": 20})], [])
    assert checks.check_epochs_run(20, other) and not checks.check_epochs_run(14, other)
