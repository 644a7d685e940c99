import numpy as np
import pytest
import torch

from lessons_lib.capacity import lab as capacity
from lessons_lib.capacity import reference
from lessons_lib.data import load


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polynomial_validation_error_is_u_shaped_and_train_error_falls(seed):
    p = capacity.polynomial_sweep(seed=seed)
    assert np.all(np.diff(p.train_mse) <= 1e-9)  # more capacity never fits the training points worse
    assert 1 <= p.best_degree < p.degrees[-1]
    assert p.val_mse.min() < p.val_mse[0] and p.val_mse.min() < p.val_mse[-1] / 10


@pytest.mark.parametrize("seed", [0, 1])
def test_random_labels_are_memorized_but_not_generalized(seed):
    r = capacity.random_labels_experiment(seed=seed, epochs=60)
    assert r.random.train_acc[-1] >= 0.9
    assert abs(r.random.val_acc[-1] - capacity.CHANCE) < 0.07
    assert r.true.val_acc[-1] > 0.9
    assert capacity.first_epoch_reaching(r.true, 0.9) < capacity.first_epoch_reaching(r.random, 0.9)


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


def test_width_sweep_under_and_overfits():
    sweep = capacity.width_sweep(widths=(2, 256), epochs=25, seed=1)
    narrow, wide = sweep
    assert narrow.train_acc < 0.5 and wide.train_acc > 0.85
    assert wide.gap > 0.15 > narrow.gap
    assert wide.params == 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10


def test_claims_verdicts_follow_the_numbers():
    p = capacity.polynomial_sweep()
    h = capacity.experiment(dataset="digits", width=8, epochs=1)
    row = lambda w, tr, va: capacity.SweepRow(w, 0, tr, va, h)  # noqa: E731
    rand = capacity.Memorization(h, h)
    good = capacity.claims([row(2, 0.3, 0.28), row(512, 1.0, 0.6)], rand, p)
    bad = capacity.claims([row(2, 0.95, 0.9), row(512, 0.97, 0.92)], rand, p)
    assert [r.holds for r in good.rows][:2] == [True, True]
    assert [r.holds for r in bad.rows][:2] == [False, False]


def test_bad_labels_knob():
    with pytest.raises(ValueError, match="labels must be 'true' or 'random'"):
        capacity.experiment(labels="shuffled")
