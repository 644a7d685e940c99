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


def test_sweep_is_paired_reproducible_and_shows_the_gap(small):
    a = lab.dropout_sweep(ps=(0.0, 0.5), epochs=8, splits=small, seeds=[3, 4, 5])
    b = lab.dropout_sweep(ps=(0.0, 0.5), epochs=8, splits=small, seeds=[3, 4, 5])
    assert [h.val_acc for h in a.histories[0.5]] == [h.val_acc for h in b.histories[0.5]]
    assert a.seeds == [3, 4, 5] and len(a.histories[0.0]) == 3 and len(a.histories[0.0][0]) == 8
    # paired: run i of every p starts from the same weights (seed i), and seeds differ from each other
    w0 = [reference.NumpyNet([40, *lab.WIDTHS, 10], q, seed=s).weights[0] for q in (0.0, 0.5) for s in (3, 4)]
    assert np.array_equal(w0[0], w0[2]) and not np.array_equal(w0[0], w0[1])
    r0, r5 = a.row(0.0), a.row(0.5)
    assert r0.n == 3 and r0.gap == pytest.approx(np.mean(a.values(0.0, "gap")))
    assert r0.gap_ci.low < r0.gap < r0.gap_ci.high and r0.gap_ci.n == 3
    assert r0.train_acc > r0.val_acc and r0.gap > r5.gap  # 300 signals: memorized without dropout
    assert a.values(0.0, "epoch_s") == [float(np.median(h.seconds)) for h in a.histories[0.0]]
    assert a.histories[0.0][0].steps == 8 * 3 and "best val" in a.table() and "3 run(s) per p" in a.table()
    fig = plots.plot_sweep(a)
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[0].collections) == 4  # mean curves and range bands
    with pytest.raises(ValueError, match="metric"):
        a.values(0.0, "accuracy")


def test_run_seeds_follow_the_course_seed(monkeypatch):
    monkeypatch.setenv("LESSONS_SEED", "0")
    s0 = lab.run_seeds(4)
    monkeypatch.setenv("LESSONS_SEED", "1")
    assert len(set(s0)) == 4 and not set(s0) & set(lab.run_seeds(4))


def test_train_vs_eval_pitfall(small):
    sweep = lab.dropout_sweep(ps=(0.5,), epochs=2, splits=small, seeds=[0])
    pit = lab.train_vs_eval(sweep.nets[0.5], small, repeats=4)
    assert pit.eval_acc == pit.eval_again and len(set(pit.train_mode)) > 1
    assert pit.train_mode_mean == pytest.approx(np.mean(pit.train_mode))
    assert sweep.row(0.5).gap_ci is None and "±" not in sweep.table()  # one run: no interval claimed


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


def test_paired_target_ratios_and_censoring():
    base = [_hist([0.5, 0.6, 0.7, 0.7], 1.0), _hist([0.6, 0.7, 0.7, 0.7], 2.0)]
    drop = [_hist([0.4, 0.5, 0.6, 0.69], 1.5), _hist([0.5, 0.5, 0.5, 0.5], 3.0)]  # seed 2 never reaches 0.686
    t = lab.paired_target(base, drop, 0.5, [11, 12])
    assert t.epochs_ratio() == pytest.approx([4 / 3, 4 / 2])  # the censored run counted at all 4 epochs
    assert t.epoch_s_ratio() == pytest.approx([1.5, 1.5])
    assert t.seconds_ratio() == pytest.approx([2.0, 3.0]) and t.censored == 1 and t.cap == 4
    assert ">4" in t.table() and "numpy, CPU" in t.table()


def test_within_is_a_three_valued_equivalence():
    from lessons_lib.stats import Interval

    assert lab.within(Interval(1.0, 0.95, 1.05, 5), 0.9, 1.1) == "holds"
    assert lab.within(Interval(1.0, 0.85, 1.05, 5), 0.9, 1.1) == "inconclusive"
    assert lab.within(Interval(1.3, 1.2, 1.4, 5), 0.9, 1.1) == "does not hold"
    assert lab.within(Interval(0.5, 0.4, 0.6, 5), 0.9, 1.1) == "does not hold"


def test_layer_cost_measures_what_it_says():
    c = lab.layer_cost(shape=(64, 256), repeats=4, seed=0)
    assert c.shape == (64, 256) and min(c.copy, c.dropout, c.matmul_dense, c.matmul_dropped, c.matmul_kept) > 0
    assert len(c.dropped_ratio) == len(c.kept_ratio) == 4 and "units dropped" in c.lines()
    assert c.kept_units == 128  # the control multiplies over the kept half only (its speed is the benchmark's business)


def test_layer_cost_times_the_products_it_names(monkeypatch):
    """With a fake clock: each product is the one its name says (shapes), and each ratio is over the right pair."""
    seen, fake = {}, {"copy": 1.0, "dropout": 5.0, "dense": 4.0, "dropped": 4.0, "kept": 1.0}

    def rounds(fns, rounds):
        seen.update({k: np.shape(f()) for k, f in fns.items() if k != "dropout"})
        return {k: [fake[k]] * rounds for k in fns}

    monkeypatch.setattr(lab, "cpu_rounds", rounds)
    c = lab.layer_cost(shape=(8, 20), p=0.25, repeats=2, seed=0)
    assert seen == {"copy": (8, 20), "dense": (8, 20), "dropped": (8, 20), "kept": (8, 20)} and c.kept_units == 15
    assert (c.copy, c.dropout, c.matmul_dense, c.matmul_dropped, c.matmul_kept) == (1.0, 5.0, 4.0, 4.0, 1.0)
    assert c.dropped_ratio == [1.0, 1.0] and c.kept_ratio == [0.25, 0.25]


def _paired_sweep(gap_drop, best_shift, sec=2.0):
    """Four seeds without dropout (gap 0.4-0.43) and with it (gap lowered by gap_drop, best val shifted)."""
    hs0 = [_hist([0.5, 0.6, 0.6 + 0.01 * i], 1.0, 0.97 + 0.01 * i) for i in range(4)]
    hs5 = [_hist([0.45, 0.55, 0.6 + 0.01 * i + best_shift], sec, 0.97 + 0.01 * i - gap_drop + best_shift)
           for i in range(4)]
    return lab.Sweep([0.0, 0.5], {0.0: hs0, 0.5: hs5}, [1, 2, 3, 4])


def _cost(dropped, kept):
    return lab.LayerCost((128, 256), 1e-6, 1e-4, 2e-4, 2e-4, 1e-4, list(dropped), list(kept))


def test_claims_from_synthetic_paired_runs():
    sweep = _paired_sweep(0.2, 0.05)
    ctt = lab.sweep_target(sweep)
    cost = _cost([1.0, 1.02, 0.98, 1.01], [0.5, 0.52, 0.49, 0.5])
    c = lab.claims(sweep, ctt, cost)
    v = [r.verdict for r in c.rows]
    assert v[:5] == ["holds"] * 5  # gap ~0.4 > 0.1; gap shrinks by 0.2; +5 points; more time; 2x s/epoch
    assert v[6] == "holds" and v[-1] == "not measurable"  # matmul within ±10%, control clearly faster; no GPU
    assert "4 runs" in c.rows[1].measured and "paired" in c.rows[1].measured
    assert lab.claims(_paired_sweep(-0.1, -0.05), ctt, cost).rows[1].verdict == "does not hold"
    assert lab.claims(_paired_sweep(0.2, 0.0), ctt, cost).rows[2].verdict == "inconclusive"  # no difference at all
    assert lab.claims(sweep, ctt, _cost([1.5, 1.6, 1.4, 1.5], [0.5] * 4)).rows[6].verdict == "does not hold"
    no_control = _cost([1.0, 1.02, 0.98, 1.01], [1.0, 0.97, 1.02, 1.0])  # the timer saw no difference at all
    assert lab.claims(sweep, ctt, no_control).rows[6].verdict == "inconclusive"
    texts = [r.claim for r in lab.claims(_paired_sweep(0.1, 0.01), ctt, cost).rows]
    assert texts == [r.claim for r in c.rows]  # no measured number in a claim: the same text under any seed
    assert "CPU" in c.rows[3].claim and "GPU" in c.rows[-1].claim


def test_torch_target_runs_the_paired_design_in_pytorch(small, one_thread):
    t = lab.torch_target(small, 0.5, device="cpu", seeds=[0, 1], epochs=3, widths=(16, 16))
    assert t.seeds == [0, 1] and t.cap == 3 and len(t.seconds_ratio()) == 2 and "PyTorch, cpu" in t.where
    c = lab.claims(_paired_sweep(0.2, 0.05), lab.sweep_target(_paired_sweep(0.2, 0.05)), _cost([1.0] * 3, [0.5] * 3),
                   gpu=t)
    assert c.rows[-1].verdict != "not measurable" and "PyTorch, cpu" in c.rows[-1].measured


def test_panel_experiment_runs_in_torch(one_thread):
    h = lab.experiment(device="cpu", callbacks=[StopAfterSteps(3)], p=0.5, epochs=1, width=32, n_train=250)
    assert h.config["p"] == 0.5 and len(h) == 1
