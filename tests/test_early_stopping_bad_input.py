"""Lesson 02, bad input at the public boundary (issue 17): EarlyStopping's settings and values, mode="auto" as in
Keras 3, the lab's functions the notebook calls, and the checks fed nonsense (a verdict, never a traceback)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib.callbacks import Callback
from lessons_lib.early_stopping import checks, lab
from lessons_lib.early_stopping.reference import EarlyStopping, direction_of
from lessons_lib.validate import BadArgument


def stop_of(es, values):
    return next((i for i, v in enumerate(values) if es.step(v)), None)


# --- mode="auto" (Keras 3's default) --------------------------------------------------------------
@pytest.mark.parametrize("monitor, direction", [("val_loss", "min"), ("loss", "min"), ("train_loss", "min"),
                                                ("val_acc", "max"), ("train_acc", "max"), ("val_accuracy", "max"),
                                                ("val_auc", "max"), ("val_mean_squared_error", "min")])
def test_auto_mode_follows_the_monitored_name(monitor, direction):
    es = EarlyStopping(monitor=monitor)
    assert es.mode == "auto" and es.direction == direction == direction_of(monitor)
    assert es.best == (math.inf if direction == "min" else -math.inf)


def test_val_acc_with_the_default_mode_is_maximized():
    # before: the default mode was "min", so a rising accuracy "never improved" and training stopped at once
    es = EarlyStopping(monitor="val_acc", patience=1)
    assert stop_of(es, [0.5, 0.6, 0.7, 0.65, 0.64]) == 3 and es.best == 0.7 and es.best_epoch == 2


def test_auto_mode_refuses_a_name_it_cannot_place_like_keras():
    with pytest.raises(BadArgument, match="pass mode='max'.*or mode='min'"):
        EarlyStopping(monitor="val_widgets")
    assert EarlyStopping(monitor="val_widgets", mode="max").direction == "max"


def test_auto_on_val_loss_matches_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")

    class Model:
        stop_training = False

        def get_weights(self):
            return []

    values = [1.0, 0.8, 0.85, 0.9, 0.7, 0.75, 0.76, 0.77]
    k = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2)  # mode="auto"
    model = Model()
    k.set_model(model)
    k.on_train_begin()
    stop = None
    for e, v in enumerate(values):
        k.on_epoch_end(e, {"val_loss": v})
        if model.stop_training:
            stop = e
            break
    assert stop_of(EarlyStopping(monitor="val_loss", patience=2), values) == stop == 3


# --- settings: numbers by the course's one rule -----------------------------------------------------
@given(st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, int]), st.integers(0, 100))
@settings(max_examples=40, deadline=None)
def test_patience_accepts_any_integer_scalar(kind, k):
    es = EarlyStopping(patience=kind(k))
    assert es.patience == k and type(es.patience) is int


@given(st.floats(min_value=0, max_value=10, allow_nan=False), st.sampled_from([float, np.float32, np.float64]))
@settings(max_examples=40, deadline=None)
def test_min_delta_accepts_float_scalars(d, kind):
    assert EarlyStopping(min_delta=kind(d)).min_delta == pytest.approx(float(kind(d)))


@pytest.mark.parametrize("kw, match", [
    (dict(patience=True), "patience=True.*got bool"), (dict(patience=np.bool_(True)), "patience"),
    (dict(patience=-1), "patience=-1"), (dict(patience=2.5), "not rounded"), (dict(patience=float("nan")), "patience"),
    (dict(patience="3"), "got str"), (dict(patience=None), "got NoneType"),
    (dict(min_delta=float("nan")), "min_delta=nan"),
    (dict(min_delta=float("inf")), "min_delta"), (dict(min_delta=False), "got bool"),
    (dict(baseline=float("nan")), "baseline"), (dict(baseline="0.5"), "baseline"),
    (dict(mode="maximize"), "one of 'auto', 'min', 'max'"), (dict(mode=None), "mode"),
    (dict(monitor=""), "monitor"), (dict(monitor=3), "monitor"),
    (dict(restore_best_weights="yes"), "True or False"), (dict(restore_best_weights=1), "True or False"),
])
def test_bad_settings_are_refused_with_the_fix(kw, match):
    with pytest.raises(BadArgument, match=match):
        EarlyStopping(**kw)


def test_a_negative_min_delta_is_its_absolute_value_as_in_keras():
    assert EarlyStopping(min_delta=np.float32(-0.25)).min_delta == 0.25


def test_values_fed_to_step():
    es = EarlyStopping(patience=1)
    assert es.step(torch.tensor(0.5)) is False and es.best == 0.5  # a one-element tensor is its number
    assert es.step(np.array([0.4])) is False and es.best == 0.4
    for bad in ("0.3", True, None, torch.tensor([0.1, 0.2]), [0.3]):
        with pytest.raises(BadArgument, match="one number per epoch"):
            es.step(bad)
    assert es.epoch == 1  # a refused value does not count as an epoch


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=20),
       st.integers(0, 4), st.sampled_from(["min", "max"]))
@settings(max_examples=60, deadline=None)
def test_any_curve_gives_a_consistent_state(values, patience, mode):
    es = EarlyStopping(mode=mode, patience=patience)
    stop = stop_of(es, values)
    assert es.best_epoch >= 0 and (stop is None or (stop == es.stopped_epoch and stop >= es.best_epoch))
    assert stop is None or es.wait >= max(patience, 1)


# --- the lab's functions -----------------------------------------------------------------------------
@pytest.mark.parametrize("values", [None, "abc", [], [[1.0, 2.0]], ["a", "b"], [True, False], 3.0])
def test_trace_and_replay_refuse_what_is_not_a_curve(values):
    for fn in (lab.trace, lab.replay):
        with pytest.raises(BadArgument, match="values"):
            fn(values, patience=1)


def test_curves_as_arrays_and_tensors_are_fine():
    curve = [1.0, 0.9, 0.95, 0.97]
    assert lab.replay(np.array(curve), patience=1).stopped_epoch == lab.replay(torch.tensor(curve), patience=1
                                                                               ).stopped_epoch == 2


@pytest.mark.parametrize("kw, match", [
    (dict(patience=True), "patience=True"), (dict(patience=2.5), "not rounded"),
    (dict(patience=float("nan")), "patience"), (dict(patience="3"), "patience"),
    (dict(min_delta="0.1"), "min_delta"), (dict(min_delta=float("nan")), "min_delta"),
    (dict(monitor="val_f1"), "monitor"), (dict(restore_best_weights="no"), "True or False"),
    (dict(epochs=0), "epochs"), (dict(width=True), "width"), (dict(lr=float("nan")), "lr"),
    (dict(early_stopping=EarlyStopping()), "not an instance"), (dict(early_stopping=lambda **kw: None), "class"),
    (dict(early_stopping=dict), "Callback subclass"), (dict(device="tpu"), "tpu"),
])
def test_experiment_refuses_bad_knobs_before_training(kw, match):
    args = dict(patience=1, epochs=1, width=4) | kw
    with pytest.raises(ValueError, match=match):
        lab.experiment(**args)


def test_sweeps_refuse_bad_runs_and_settings():
    with pytest.raises(BadArgument, match="n_seeds"):
        lab.long_runs(1)
    with pytest.raises(BadArgument, match="list of long runs"):
        lab.patience_study("runs")
    with pytest.raises(BadArgument, match="at least 1"):
        lab.min_delta_sweep([])
    with pytest.raises(BadArgument, match="one long run"):
        lab.evaluate_policy([1, 2], patience=1)
    with pytest.raises(BadArgument, match="at least 2"):
        lab.claims([], None, 0, 0)
    with pytest.raises(BadArgument, match="Interval"):
        lab.pm(0.5)
    with pytest.raises(BadArgument, match="Callback subclass"):
        lab.make_panel(early_stopping=3)


@pytest.fixture(scope="module")
def runs():
    return lab.long_runs(2, epochs=4, width=8)


def test_a_policy_on_a_tiny_run_is_checked(runs):
    with pytest.raises(BadArgument, match="patiences"):
        lab.patience_study(runs, [])
    with pytest.raises(BadArgument, match="patience=-1"):
        lab.evaluate_policy(runs[0], -1)
    with pytest.raises(BadArgument, match="monitor"):
        lab.evaluate_policy(runs[0], 1, monitor="val_f1")
    with pytest.raises(BadArgument, match="min_delta=nan"):
        lab.min_delta_sweep(runs, 1, [float("nan")])
    with pytest.raises(BadArgument, match="PolicyResult"):
        lab.plot_curve_and_stop(runs[0], None)


# --- the checks fed nonsense: a "Not yet" verdict, never a traceback ------------------------------------
def not_yet(result, *words):
    assert result.status == "wrong" and result.message.startswith("✗ Not yet:"), result.message
    for w in words:
        assert w in result.message, result.message


def test_check_early_stopping_on_nonsense():
    def a_function(**kw):
        return None

    class NotACallback:
        def __init__(self, **kw):
            pass

    class WrongInit(Callback):
        def __init__(self, patience):
            self.patience = patience

    class Crashes(Callback):
        def __init__(self, **kw):
            pass

        def on_epoch_end(self, state):
            return self.undefined

    not_yet(checks.check_early_stopping(a_function), "should be a class")
    not_yet(checks.check_early_stopping(NotACallback), "subclass of Callback")
    not_yet(checks.check_early_stopping(WrongInit), "constructor must take Keras's keywords", "(patience)")
    not_yet(checks.check_early_stopping(Crashes), "AttributeError")
    not_yet(checks.check_early_stopping(EarlyStopping(patience=1)))  # an instance, not the class
    not_yet(checks.check_early_stopping(42))


@pytest.mark.parametrize("answer", [np.array([1, 4]), [4], (4, 5), True, "four", {"a": 4}, torch.tensor([4, 5])])
def test_question_checks_on_nonsense_answers(answer, runs):
    sweeps = lab.patience_sweeps(runs[0])
    for check in (lambda a: checks.check_stop_epoch(a, lab.QUIZ), lambda a: checks.check_restored_epoch(a, lab.QUIZ),
                  lambda a: checks.check_epochs_run(a, sweeps)):
        not_yet(check(answer))


def test_one_element_arrays_are_their_number():
    assert checks.check_stop_epoch(np.int64(4), lab.QUIZ).ok and checks.check_stop_epoch(np.array([4]), lab.QUIZ).ok
    assert checks.check_restored_epoch(torch.tensor(1), lab.QUIZ).ok


def test_a_sweep_row_that_is_not_there_is_named(runs):
    sweeps = lab.patience_sweeps(runs[0])
    assert sweeps.at(np.int64(5)).patience == 5
    for bad in (4, True, "5"):
        with pytest.raises(BadArgument, match="not in this sweep; it has patience 0, 1, 2"):
            sweeps.at(bad)
    with pytest.raises(BadArgument, match="monitor"):
        sweeps.at(5, "val_f1")
    assert checks.check_epochs_run(sweeps.at(5).epochs_run, sweeps, patience=5).ok
