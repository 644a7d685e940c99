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


def test_a_nan_is_no_improvement_as_in_keras_3():
    # no NaN rule of its own: a NaN counts as an epoch without improvement (Keras leaves stopping at once to
    # TerminateOnNaN), so training stops `patience` epochs after the last improvement
    es = EarlyStopping(patience=2)
    assert run(es, [1.0, 0.9, float("nan"), float("nan"), 0.1]) == 3
    assert es.best == 0.9 and es.best_epoch == 1 and "for 2 epoch(s)" in es.stop_reason
    assert run(EarlyStopping(patience=2), [1.0, float("inf"), 0.5]) is None  # +inf: no improvement, 0.5 one


def test_a_nan_at_the_first_epoch_is_the_best_and_never_beaten():
    model = torch.nn.Linear(2, 1)
    es = EarlyStopping(patience=1, restore_best_weights=True)
    for i, v in enumerate([float("nan"), float("nan")]):
        with torch.no_grad():
            model.weight.fill_(float(i))
        if es.step(v, model):
            break
    assert es.stopped_epoch == 1 and es.best_epoch == 0 and es.restored and torch.all(model.weight == 0.0)


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
    ({"patience": -1}, r"patience=-1: must be a whole number in \[0, inf\]"),
    ({"patience": 1.5}, "patience=1.5: must be a whole number .* not rounded"),
    ({"mode": "sideways"}, "mode='sideways': must be one of 'auto', 'min', 'max'"),
    ({"min_delta": float("nan")}, "min_delta=nan: must be a number .*finite"),
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
from lessons_lib.early_stopping.checks import cases  # noqa: E402
from lessons_lib.seeds import replicate_seeds  # noqa: E402
from lessons_lib.training import History  # noqa: E402


def fake_run(val_loss, test_acc, val_acc=None):
    h = History()
    for i, (v, a) in enumerate(zip(val_loss, val_acc or test_acc)):
        h.append({"epoch": i, "train_loss": 0.0, "train_acc": 0.0, "val_loss": v, "val_acc": a, "seconds": 1.0,
                  "samples_per_s": 1.0, "step_seconds": 0.1})
    return lesson.LongRun(h, list(test_acc))


def test_trace_shows_the_boundary_case():
    text = lesson.trace([1.0, 0.75, 0.5, 0.25], min_delta=0.25, patience=2)
    rows = text.splitlines()[1:]
    assert [r.split()[2] for r in rows] == ["yes", "no", "yes", "no"]
    assert "STOP" not in text


def test_patience_0_and_1_are_the_same_policy():
    assert lesson.stop_epochs([1.0, 0.9, 0.95, 0.8, 0.85, 0.86], (0, 1, 2)) == [2, 2, 5]
    for c in cases():
        s0, s1 = lesson.stop_epochs(c.values, (0, 1), mode=c.mode, min_delta=c.min_delta, baseline=c.baseline)
        assert s0 == s1, c


def test_policy_accounting_on_a_hand_made_run():
    run = fake_run([1.0, 0.8, 0.7, 0.72, 0.75, 0.74, 0.8, 0.9, 1.0, 1.1],
                   [0.5, 0.6, 0.7, 0.69, 0.68, 0.68, 0.66, 0.65, 0.64, 0.63])
    assert run.full_test_acc == 0.63 and run.rise == pytest.approx(0.4)  # the yardstick: the LAST epoch
    r = lesson.evaluate_policy(run, patience=2)
    assert (r.best_epoch, r.epochs_run, r.stopped) == (2, 5, True)
    assert r.compute_saved == pytest.approx(0.5)
    assert r.test_acc_restored == 0.7 and r.test_acc_last == 0.68
    assert r.acc_lost == pytest.approx(-0.07) and r.acc_lost_last == pytest.approx(-0.05)  # stopping gained here
    never = lesson.evaluate_policy(run, patience=20)
    assert never.epochs_run == 10 and not never.stopped and never.compute_saved == 0.0
    by_acc = lesson.evaluate_policy(run, patience=1, monitor="val_acc")
    assert (by_acc.best_epoch, by_acc.epochs_run) == (2, 4)
    assert r.budget == 10
    sweeps = lesson.patience_sweeps(run, patiences=(1, 2))
    assert sweeps.at(2) == r and sweeps.at(1, "val_acc") == by_acc
    assert [m for m, _ in sweeps.items()] == ["val_loss", "val_acc"]


def test_policy_stats_pair_the_runs():
    a = fake_run([1.0, 0.8, 0.9, 0.95, 1.0], [0.5, 0.7, 0.72, 0.74, 0.76])
    b = fake_run([1.0, 0.9, 0.8, 0.85, 0.9], [0.5, 0.6, 0.7, 0.7, 0.8])
    s = lesson.policy_stats([a, b], patience=1)
    assert [r.epochs_run for r in s.results] == [3, 4] and (s.monitor, s.patience, s.min_delta) == ("val_loss", 1, 0)
    # a: restored epoch 1 (0.70) vs the last epoch 0.76 -> lost 0.06; b: epoch 2 (0.70) vs 0.80 -> lost 0.10
    assert s.lost.mean == pytest.approx(0.08) and s.lost.n == 2
    assert s.saved.mean == pytest.approx(1 - 3.5 / 5)
    # restored - last weights: a: 0.70 - 0.72, b: 0.70 - 0.70
    assert s.restore_gain.mean == pytest.approx(-0.01)
    study = lesson.patience_study([a, b], patiences=(0, 1))
    assert study.at(1).results == s.results and len(study.val_acc) == 2
    deltas = lesson.min_delta_sweep([a, b], patience=1, min_deltas=(0.0, 0.15))
    assert [d.min_delta for d in deltas] == [0.0, 0.15]
    assert all(x.epochs_run <= y.epochs_run for x, y in zip(deltas[1].results, deltas[0].results))


@pytest.mark.parametrize("seed", [0, 1])
def test_real_curve_overfits_and_replay_matches_live_training(seed, one_thread):
    run = lesson.long_run(epochs=30, width=256, seed=seed)
    h = run.history
    assert run.best_val_epoch < 25 and h.val_loss[-1] > h.val_loss[run.best_val_epoch] + 0.05
    live = lesson.experiment(patience=3, epochs=30, width=256, seed=seed)
    assert len(live) - 1 == lesson.replay(h.val_loss, patience=3).stopped_epoch
    assert live.val_loss[: len(live)] == h.val_loss[: len(live)]
    # the run hands back the restored best weights, and says so
    best = lesson.replay(h.val_loss, patience=3).best_epoch
    assert live.restored and live.weights_epoch == best
    assert live.final_val_acc == pytest.approx(h.val_acc[best])
    summary = live.summary()
    assert summary["val_acc"] == live.final_val_acc and f"weights of epoch {best} restored" in summary["stop"]


def test_the_restore_checkbox_changes_what_the_panel_shows(one_thread):
    on = lesson.experiment(patience=2, epochs=12, width=64, seed=3)
    off = lesson.experiment(patience=2, epochs=12, width=64, seed=3, restore_best_weights=False)
    assert on.val_loss == off.val_loss  # the same training...
    assert not off.restored and off.weights_epoch == len(off) - 1
    assert off.final_val_acc == pytest.approx(off.val_acc[-1])
    assert on.restored and on.final_val_acc == pytest.approx(on.val_acc[on.weights_epoch])
    assert "kept" in off.summary()["stop"] and "restored" in on.summary()["stop"]
    none = lesson.experiment(patience=None, epochs=2, width=16, seed=3)
    assert none.summary()["stop"] == "weights of epoch 1 kept"


def test_long_runs_use_replicate_seeds():
    runs = lesson.long_runs(2, epochs=2, width=16, seed=5)
    assert [r.seed for r in runs] == replicate_seeds(2, stream=1, seed=5) and len(runs[0].test_acc) == 2


def test_claims_follow_the_intervals():
    def run(shift):  # a blip at epoch 2 (patience 1 stops there), the best at epoch 3, then overfitting
        vals = [1.0, 0.8, 0.82, 0.7, 0.72, 0.75, 0.74, 0.8, 0.9, 1.0, 1.1, 1.2]
        return fake_run([v + shift for v in vals], [a + shift for a in
                        [0.5, 0.6, 0.61, 0.7, 0.69, 0.68, 0.68, 0.66, 0.65, 0.64, 0.63, 0.62]])

    runs = [run(0.0), run(0.001), run(-0.002)]
    study = lesson.patience_study(runs, patiences=(1, 5))
    rows = lesson.claims(runs, study, live_stop=7, replay_stop=7).rows
    # rises 0.5; patience 5 stops after epoch 8 (25% saved), restores epoch 3: 8 pts above the last epoch, 5 above
    # the last weights run, 10 above patience 1's restored epoch 1
    assert [r.verdict for r in rows] == ["holds"] * 8
    assert lesson.claims(runs, study, live_stop=8, replay_stop=7).rows[-1].holds is False
    # accuracy that keeps rising after the loss turned: early stopping costs more than a point -> does not hold
    rising = [fake_run([1.0, 0.8, 0.7, 0.72, 0.75, 0.74, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3],
                       [0.5, 0.6, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76, 0.77, 0.78 + d, 0.79 + d])
              for d in (0.0, 0.005, 0.01)]
    rows = lesson.claims(rising, lesson.patience_study(rising, patiences=(1, 5)), 7, 7).rows
    assert rows[2].verdict == "does not hold" and rows[5].verdict == "does not hold"
