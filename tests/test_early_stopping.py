import math

import pytest
import torch

from lessons_lib.early_stopping.reference import EarlyStopping


def run(es, values, model=None):
    """Feed values until step() says stop; return the index of the stopping value or None."""
    for i, v in enumerate(values):
        if es.step(v, model):
            return i
    return None


def test_min_delta_boundary_matches_keras():
    # 0.75 and 0.25 improve by exactly min_delta: not an improvement (strict). Keras 3.15 gives the same.
    es = EarlyStopping(min_delta=0.25, patience=2)
    assert run(es, [1.0, 0.75, 0.5, 0.25]) is None
    assert es.best == 0.5 and es.best_epoch == 2 and es.wait == 1 and es.stopped_epoch is None


def test_patience_counts_epochs_without_improvement():
    es = EarlyStopping(patience=3)
    assert run(es, [1.0, 0.9, 0.95, 0.95, 0.91, 0.5]) == 4
    assert es.stopped_epoch == 4 and es.best == 0.9 and es.best_epoch == 1 and es.wait == 3


def test_patience_zero_stops_at_first_non_improvement_but_never_on_first_value():
    es = EarlyStopping(patience=0)
    assert not es.step(5.0)
    assert not es.step(4.0)
    assert es.step(4.0)
    assert es.stopped_epoch == 2


def test_min_delta_0_01_from_seed_004():
    # improvements of 0.005 do not count with min_delta=0.01: stops after `patience` of them
    es = EarlyStopping(min_delta=0.01, patience=2)
    assert run(es, [1.0, 0.995, 0.99, 0.985]) == 2
    assert es.best == 1.0
    # the same curve with min_delta=0 never stops
    assert run(EarlyStopping(patience=2), [1.0, 0.995, 0.99, 0.985]) is None


def test_negative_min_delta_means_its_absolute_value():
    a, b = EarlyStopping(min_delta=-0.1, patience=1), EarlyStopping(min_delta=0.1, patience=1)
    vals = [1.0, 0.95, 0.8, 0.79]
    assert run(a, vals) == run(b, vals) == 1


def test_max_mode():
    es = EarlyStopping(monitor="val_acc", mode="max", min_delta=0.01, patience=2)
    assert run(es, [0.5, 0.6, 0.605, 0.7, 0.705, 0.709]) == 5
    assert es.best == 0.7 and es.best_epoch == 3
    assert es.best == pytest.approx(0.7)


def test_best_starts_at_infinity():
    assert EarlyStopping().best == math.inf
    assert EarlyStopping(mode="max").best == -math.inf


def test_baseline_must_be_beaten():
    # improvements that do not beat the baseline 0.5 do not reset wait (Keras 3): it stops one epoch earlier
    vals = [0.9, 0.8, 0.85, 0.86]
    assert run(EarlyStopping(patience=2, baseline=0.5), vals) == 2
    assert run(EarlyStopping(patience=2), vals) == 3
    # beating the baseline resets wait as usual
    assert run(EarlyStopping(patience=2, baseline=0.5), [0.9, 0.45, 0.44, 0.43]) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_stops_at_once(bad):
    es = EarlyStopping(patience=100)
    assert run(es, [1.0, 0.9, bad, 0.1]) == 2
    assert es.stopped_epoch == 2 and "became" in es.stop_reason and es.best == 0.9


def test_restore_best_weights():
    model = torch.nn.Linear(2, 1)
    es = EarlyStopping(patience=1, restore_best_weights=True)
    losses = [1.0, 0.5, 0.7]
    weights = []
    for i, v in enumerate(losses):
        with torch.no_grad():
            model.weight.fill_(float(i))
        weights.append(float(i))
        if es.step(v, model):
            break
    assert es.stopped_epoch == 2 and es.restored
    assert torch.all(model.weight == 1.0)  # the weights of epoch 1, the best


def test_without_restore_weights_stay():
    model = torch.nn.Linear(2, 1)
    es = EarlyStopping(patience=1)
    for i, v in enumerate([1.0, 0.5, 0.7]):
        with torch.no_grad():
            model.weight.fill_(float(i))
        es.step(v, model)
    assert torch.all(model.weight == 2.0)


@pytest.mark.parametrize("kwargs, words", [
    ({"patience": -1}, "patience must be an integer >= 0"),
    ({"patience": 1.5}, "patience must be an integer >= 0"),
    ({"mode": "sideways"}, "mode must be 'min' or 'max'"),
    ({"min_delta": float("nan")}, "min_delta must be a finite"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        EarlyStopping(**kwargs)


def test_reused_after_reset():
    es = EarlyStopping(patience=0)
    run(es, [1.0, 2.0])
    assert es.stopped_epoch == 1
    es.reset()
    assert es.stopped_epoch is None and es.best == math.inf and es.best_epoch == -1


# --- lesson 02: the apparatus ---------------------------------------------------------------------
from lessons_lib.early_stopping import lab as lesson  # noqa: E402
from lessons_lib.training import History  # noqa: E402


def fake_run(val_loss, test_acc):
    h = History()
    for i, (v, a) in enumerate(zip(val_loss, test_acc)):
        h.append({"epoch": i, "train_loss": 0.0, "train_acc": 0.0, "val_loss": v, "val_acc": a, "seconds": 1.0,
                  "samples_per_s": 1.0, "step_seconds": 0.1})
    return lesson.LongRun(h, list(test_acc))


def test_trace_shows_the_boundary_case():
    text = lesson.trace([1.0, 0.75, 0.5, 0.25], min_delta=0.25, patience=2)
    rows = text.splitlines()[1:]
    assert [r.split()[2] for r in rows] == ["yes", "no", "yes", "no"]
    assert "STOP" not in text


def test_policy_accounting_on_a_hand_made_run():
    run = fake_run([1.0, 0.8, 0.7, 0.72, 0.75, 0.74, 0.8, 0.9, 1.0, 1.1],
                   [0.5, 0.6, 0.7, 0.69, 0.68, 0.68, 0.66, 0.65, 0.64, 0.63])
    r = lesson.evaluate_policy(run, patience=2)
    assert (r.best_epoch, r.epochs_run, r.stopped) == (2, 5, True)
    assert r.compute_saved == pytest.approx(0.5)
    assert r.test_acc_restored == 0.7 and r.test_acc_last == 0.68 and r.acc_lost == 0.0
    assert run.reference_acc == 0.7
    never = lesson.evaluate_policy(run, patience=20)
    assert never.epochs_run == 10 and not never.stopped and never.compute_saved == 0.0
    by_acc = lesson.evaluate_policy(run, patience=1, monitor="val_acc")
    assert (by_acc.best_epoch, by_acc.epochs_run) == (2, 4)
    assert r.budget == 10
    sweeps = lesson.patience_sweeps(run, patiences=(1, 2))
    assert sweeps.at(2) == r and sweeps.at(1, "val_acc") == by_acc
    assert [m for m, _ in sweeps.items()] == ["val_loss", "val_acc"]


@pytest.mark.parametrize("seed", [0, 1])
def test_real_curve_overfits_and_replay_matches_live_training(seed):
    run = lesson.long_run(epochs=30, width=256, seed=seed)
    h = run.history
    assert run.best_val_epoch < 25 and h.val_loss[-1] > h.val_loss[run.best_val_epoch] + 0.05
    live = lesson.experiment(patience=3, epochs=30, width=256, seed=seed)
    assert len(live) - 1 == lesson.replay(h.val_loss, patience=3).stopped_epoch
    assert live.val_loss[: len(live)] == h.val_loss[: len(live)]


def test_claims_follow_the_numbers():
    vals = [1.0, 0.8, 0.7, 0.72, 0.75, 0.74, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
    run = fake_run(vals, [0.5, 0.6, 0.7, 0.69, 0.68, 0.68, 0.66, 0.65, 0.64, 0.63, 0.62, 0.61])
    sweeps = lesson.patience_sweeps(run, patiences=(2, 5))
    deltas = lesson.min_delta_sweep(run, patience=5)
    rows = lesson.claims(run, sweeps, deltas, live_stop=7, replay_stop=7).rows
    assert [r.holds for r in rows] == [True, True, True, True, True, True, True]
    assert lesson.claims(run, sweeps, deltas, live_stop=8, replay_stop=7).rows[-1].holds is False
