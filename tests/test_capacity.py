import numpy as np
import pytest
import torch

from lessons_lib.capacity import lab as capacity
from lessons_lib.capacity import reference
from lessons_lib.data import load
from lessons_lib.history import History
from lessons_lib.models import mlp
from lessons_lib.multiseed import fit_seeds
from lessons_lib.seeds import replicate_seeds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polynomial_validation_error_is_u_shaped_and_train_error_falls(seed):
    p = capacity.polynomial_sweep(seed=seed)
    assert np.all(np.diff(p.train_mse) <= 1e-9)  # more capacity never fits the training points worse
    assert 1 <= p.best_degree < p.degrees[-1]
    assert p.val_mse.min() < p.val_mse[0] and p.val_mse.min() < p.val_mse[-1] / 10


def test_polynomial_draws_are_independent_and_follow_the_course_seed():
    a, b = capacity.polynomial_sweeps(n=3, seed=0), capacity.polynomial_sweeps(n=3, seed=1)
    xs = [tuple(p.x_train) for p in a + b]
    assert len(set(xs)) == 6  # six different draws of the training points
    assert [tuple(p.x_train) for p in capacity.polynomial_sweeps(n=3, seed=0)] == xs[:3]  # reproducible


def test_random_labels_are_memorized_but_not_generalized(one_thread):
    r = capacity.random_labels_experiment(n_seeds=2, seed=1, epochs=40)
    assert len(r.random) == len(r.true) == len(r.seeds) == 2
    assert all(h.train_acc[-1] >= 0.9 for h in r.random)
    assert all(abs(h.val_acc[-1] - capacity.CHANCE) < 0.1 for h in r.random)
    assert all(h.val_acc[-1] > 0.9 for h in r.true)
    assert all(t < rnd for t, rnd in zip(r.epochs_to("true"), r.epochs_to("random")))


def test_each_seed_gets_its_own_shuffle():
    data = load("digits", seed=3)
    a = capacity.with_random_train_labels(data, reference.random_labels, seed=11)
    b = capacity.with_random_train_labels(data, reference.random_labels, seed=12)
    assert not torch.equal(a.y_train, b.y_train)


def test_epochs_to_counts_a_run_that_never_gets_there_as_its_budget():
    h = History()
    for i, acc in enumerate([0.2, 0.5, 0.95]):
        h.append({"epoch": i, "train_loss": 0.0, "train_acc": acc, "val_loss": 0.0, "val_acc": 0.1, "seconds": 1.0,
                  "samples_per_s": 1.0, "step_seconds": 0.1})
    m = capacity.Memorization([h], [h], [0])
    assert m.epochs_to("true", 0.9) == [2] and m.epochs_to("true", 0.99) == [3]


def test_random_train_labels_are_a_permutation_and_validation_keeps_its_labels():
    data = load("digits", seed=3)
    rand = capacity.with_random_train_labels(data, reference.random_labels, seed=3)
    assert torch.equal(rand.y_val, data.y_val) and torch.equal(rand.x_train, data.x_train)
    assert torch.equal(torch.bincount(rand.y_train), torch.bincount(data.y_train))
    assert (rand.y_train == data.y_train).float().mean() < 0.2 and rand.y_train.dtype == torch.int64
    again = capacity.with_random_train_labels(data, reference.random_labels, seed=3)
    assert torch.equal(again.y_train, rand.y_train)  # reproducible from the seed


def test_the_sweep_runs_on_the_function_it_is_given():
    calls = []

    def spy(x, y, xv, yv, d):
        calls.append(d)
        return reference.fit_polynomial(x, y, xv, yv, d)

    p = capacity.polynomial_sweep(degrees=(0, 2, 5), fit=spy)
    assert calls == [0, 2, 5] and [len(c) for c in p.coefs] == [1, 3, 6]
    xs, ys = capacity.poly_fit_curve(p, 2)
    assert np.allclose(ys, np.polyval(p.coefs[1][::-1], xs))


def test_width_sweep_under_and_overfits_on_every_seed(one_thread):
    sweep = capacity.width_sweep(widths=(2, 256), epochs=25, n_seeds=2, seed=1)
    narrow, wide = sweep
    assert len(narrow.histories) == len(wide.histories) == 2
    assert max(narrow.train_accs) < 0.5 and min(wide.train_accs) > 0.85
    assert min(wide.gaps) > 0.15 > max(narrow.gaps)
    assert wide.params == 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert wide.train_acc == pytest.approx(np.mean(wide.train_accs)) and wide.gap == pytest.approx(np.mean(wide.gaps))


def test_width_sweep_seeds_are_what_fit_seeds_trains(one_thread):
    """Each row's runs are fit_seeds's runs for the replicate seeds (the same seeds at every width)."""
    row = capacity.width_sweep(widths=(8,), epochs=2, n_seeds=2, seed=0)[0]
    data = load("mnist1d", seed=0)
    runs = fit_seeds(lambda: mlp(40, [8, 8], 10), data, replicate_seeds(2, stream=1, seed=0), epochs=2,
                     batch_size=64, eval_train=True)
    assert [h.val_loss for h in row.histories] == [r.history.val_loss for r in runs]


def _hist(train_acc: list[float], val_acc: list[float]) -> History:
    h = History()
    for i, (tr, va) in enumerate(zip(train_acc, val_acc)):
        h.append({"epoch": i, "train_loss": 0.0, "train_acc": tr, "val_loss": 1.0, "val_acc": va, "seconds": 1.0,
                  "samples_per_s": 1.0, "step_seconds": 0.1})
    return h


def _sweep(narrow: list[tuple[float, float]], wide: list[tuple[float, float]]) -> list[capacity.SweepRow]:
    return [capacity.SweepRow(w, 0, [_hist([tr], [va]) for tr, va in runs]) for w, runs in ((2, narrow), (256, wide))]


def test_claims_verdicts_follow_the_intervals():
    polys = capacity.polynomial_sweeps(n=5)
    fast = [_hist([0.95] * 10, [0.97] * 10)] * 3
    slow = [_hist([0.1 * i for i in range(9)] + [0.95], [v] * 10) for v in (0.09, 0.11, 0.12)]
    rand = capacity.Memorization(fast, slow, [1, 2, 3])
    good = capacity.claims(_sweep([(0.3, 0.28), (0.28, 0.25), (0.32, 0.3)], [(1.0, 0.6), (0.98, 0.62), (0.99, 0.6)]),
                           rand, polys)
    assert [r.verdict for r in good.rows] == ["holds"] * 6
    # random labels that never reach 90% in 10 epochs: not memorized; counted as 10 epochs, still slower than 0
    stuck = [_hist([0.1 + 0.04 * i for i in range(10)], [v] * 10) for v in (0.09, 0.11, 0.12)]
    rows = capacity.claims(_sweep([(0.3, 0.28)] * 3, [(1.0, 0.6)] * 3), capacity.Memorization(fast, stuck, [1, 2, 3]),
                           polys).rows
    assert [r.verdict for r in rows][2:5] == ["does not hold", "holds", "holds"]
    assert "never gets there counts its 10 epochs" in rows[4].measured and "10.0 ± 0.0" in rows[4].measured
    # no capacity effect: does not hold; a difference whose interval straddles the threshold: inconclusive
    bad = capacity.claims(_sweep([(0.95, 0.9), (0.96, 0.91), (0.94, 0.9)], [(0.97, 0.92), (0.96, 0.91), (0.95, 0.9)]),
                          rand, polys)
    assert [r.verdict for r in bad.rows][:2] == ["does not hold", "does not hold"]
    mixed = capacity.claims(_sweep([(0.3, 0.3), (0.3, 0.3), (0.3, 0.3)], [(0.35, 0.3), (0.5, 0.3), (0.3, 0.3)]),
                            rand, polys)
    assert [r.verdict for r in mixed.rows][:2] == ["inconclusive", "inconclusive"]
    # validation far from chance (a model that generalized): does not hold
    smart = [_hist([0.1 * i for i in range(9)] + [0.95], [v] * 10) for v in (0.5, 0.55, 0.6)]
    assert capacity.claims(_sweep([(0.3, 0.28)] * 3, [(1.0, 0.6)] * 3), capacity.Memorization(fast, smart, [1, 2, 3]),
                           polys).rows[3].verdict == "does not hold"


def test_all_of():
    assert capacity.all_of("holds", "holds") == "holds"
    assert capacity.all_of("holds", "inconclusive") == "inconclusive"
    assert capacity.all_of("inconclusive", "does not hold") == "does not hold"


def test_bad_labels_knob():
    with pytest.raises(ValueError, match="labels='shuffled': must be one of 'true', 'random'"):
        capacity.experiment(labels="shuffled")
