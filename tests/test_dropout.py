"""lessons_lib.dropout: the reference layer's statistics and gradients, the numpy MLP against torch autograd,
the sweep, the pitfall, compute to target, the layer cost and the claims."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.dropout import lab, plots, reference
from lessons_lib.history import History


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_forward_statistics_exact_bounds(p):
    x = 0.5 + np.random.default_rng(0).random((512, 512))
    out, (keep, cache_p) = reference.dropout_forward(x, p, True, np.random.default_rng(3))
    assert cache_p == p and keep.dtype == bool and keep.shape == x.shape
    np.testing.assert_allclose(out, np.where(keep, x / (1 - p), 0.0))  # 0 or x/(1-p), nothing else
    lo, hi = binom.interval(1 - 1e-9, x.size, p)
    assert lo <= (~keep).sum() <= hi
    sd = math.sqrt(p / (1 - p) * np.sum(x * x)) / x.size
    assert abs(out.mean() - x.mean()) < 6 * sd  # inverted: the mean is kept
    dout = np.random.default_rng(4).standard_normal(x.shape)
    np.testing.assert_array_equal(reference.dropout_backward(dout, (keep, p)), dout * keep / (1 - p))


def test_identity_cases_draw_nothing_and_bad_p():
    x = np.arange(12.0).reshape(3, 4)
    g = np.random.default_rng(0)
    state = g.bit_generator.state
    for p, train in ((0.0, True), (0.5, False)):
        out, cache = reference.dropout_forward(x, p, train, g)
        assert out is x and cache == (None, p)
        assert reference.dropout_backward(x, cache) is x
    assert g.bit_generator.state == state
    for bad in (-0.5, 1.0, 2, True):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            reference.dropout_forward(x, bad)


def test_gradient_error_tells_right_from_wrong():
    assert reference.gradient_error(seed=1) < 1e-8

    def no_scale(dout, cache):
        return dout if cache[0] is None else dout * cache[0]

    assert reference.gradient_error(backward=no_scale) > 1e-2
    rows = lab.net_gradient_check(seed=2)
    assert [r.name for r in rows][:3] == ["dropout layer dx", "net dW1", "net db1"]
    assert all(r.ok for r in rows), rows
    assert not all(r.ok for r in lab.net_gradient_check(backward=no_scale))
    assert "✓" in lab.gradient_table(rows)


def test_numpy_net_gradients_equal_torch_autograd_with_the_same_masks():
    masks = []

    def recording_forward(x, p, train, rng):
        out, cache = reference.dropout_forward(x, p, train, rng)
        masks.append(cache[0])
        return out, cache

    net = reference.NumpyNet([5, 7, 6, 3], 0.4, recording_forward, seed=0, dtype=np.float64)
    data = np.random.default_rng(1)
    x, y = data.standard_normal((4, 5)), data.integers(0, 3, 4)
    loss, grads = net.loss_and_grads(x, y, np.random.default_rng(2))
    params = [torch.tensor(w, requires_grad=True) for w in net.params]
    h = torch.tensor(x)
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i < len(params) - 2:
            h = torch.relu(h) * torch.tensor(masks[i // 2]) / (1 - 0.4)
    ref = torch.nn.functional.cross_entropy(h, torch.tensor(y))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for g, t in zip(grads, params):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def small():
    return lab.lesson_splits(300, seed=0)


def test_sweep_is_reproducible_and_shows_the_gap(small):
    a = lab.dropout_sweep(ps=(0.0, 0.5), epochs=8, splits=small, seed=0)
    b = lab.dropout_sweep(ps=(0.0, 0.5), epochs=8, splits=small, seed=0)
    assert a.histories[0.5].val_acc == b.histories[0.5].val_acc and len(a.histories[0.0]) == 8
    r0, r5 = a.row(0.0), a.row(0.5)
    assert r0.train_acc > r0.val_acc and r0.gap > r5.gap  # 300 signals: memorized without dropout
    assert a.histories[0.0].steps == 8 * 3 and "best val" in a.table()
    fig = plots.plot_sweep(a)
    assert len(fig.axes[0].lines) == 4


def test_train_vs_eval_pitfall(small):
    sweep = lab.dropout_sweep(ps=(0.5,), epochs=2, splits=small, seed=0)
    pit = lab.train_vs_eval(sweep.nets[0.5], small, repeats=4)
    assert pit.eval_acc == pit.eval_again and len(set(pit.train_mode)) > 1
    assert pit.train_mode_mean == pytest.approx(np.mean(pit.train_mode))


def test_stats_against_nn_dropout():
    rows = lab.compare_with_nn_dropout(p=0.5, shape=(256, 512), seed=0)
    assert [r.name for r in rows] == ["theory", "yours (numpy)", "nn.Dropout"]
    for r in rows[1:]:
        assert abs(r.mean - 1) < 0.02 and abs(r.var - 1) < 0.03 and abs(r.dropped - 0.5) < 0.01
    assert "variance" in lab.stats_table(rows)


def _hist(vals, seconds=1.0, train_acc=1.0):
    h = History()
    for i, v in enumerate(vals):
        h.append({"epoch": i, "train_loss": 0, "train_acc": train_acc, "val_loss": 0, "val_acc": v,
                  "seconds": seconds, "samples_per_s": 1, "step_seconds": 0.1})
    return h


def test_compute_to_target():
    runs = {"p=0": _hist([0.5, 0.6, 0.7], 1.0), "p=0.5": _hist([0.4, 0.5, 0.6, 0.69, 0.72], 1.5)}
    ctt = lab.compute_to_target(runs)
    assert ctt.target == pytest.approx(0.98 * 0.7)
    assert ctt.get("p=0").epochs == 3 and ctt.get("p=0").seconds == pytest.approx(3.0)
    assert ctt.get("p=0.5").epochs == 4 and ctt.get("p=0.5").seconds == pytest.approx(6.0)
    assert lab.compute_to_target(runs, target=0.9).get("p=0").seconds is None
    assert "not reached" in lab.compute_to_target(runs, target=0.9).table()


def test_layer_cost_measures_what_it_says():
    c = lab.layer_cost(shape=(64, 128), repeats=3, seed=0)
    assert c.shape == (64, 128) and min(c.copy, c.dropout, c.matmul_dense, c.matmul_dropped) > 0
    assert "units dropped" in c.lines()


def test_claims_from_synthetic_runs():
    sweep = lab.Sweep([0.0, 0.5], {0.0: _hist([0.5, 0.6, 0.62]), 0.5: _hist([0.4, 0.6, 0.66], 2.0, 0.8)})
    ctt = lab.compute_to_target({"p=0": sweep.histories[0.0], "p=0.5": sweep.histories[0.5]})
    cost = lab.LayerCost((128, 256), 1e-6, 1e-4, 2e-4, 2.1e-4)
    c = lab.claims(sweep, ctt, 0.5, cost)
    holds = [r.holds for r in c.rows]
    assert holds[:5] == [True, True, True, True, True]  # gap 0.38 -> 0.14, 0.66 > 0.62, 2x the seconds
    assert holds[6] is True and holds[-1] is None  # matmul 1.05x: the dropped units are computed; no GPU
    cost = lab.LayerCost((128, 256), 1e-6, 1e-4, 2e-4, 1e-4)
    assert lab.claims(sweep, ctt, 0.5, cost).rows[6].holds is False


def test_panel_experiment_runs_in_torch(one_thread):
    h = lab.experiment(device="cpu", callbacks=[StopAfterSteps(3)], p=0.5, epochs=1, width=32, n_train=250)
    assert h.config["p"] == 0.5 and len(h) == 1
