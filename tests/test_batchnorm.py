import math

import numpy as np
import pytest
import torch

from lessons_lib.batchnorm import lab as bn
from lessons_lib.batchnorm import runs
from lessons_lib.batchnorm.reference import BatchNormState, batchnorm_backward, batchnorm_forward, bn_mlp, new_state
from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.data import load
from lessons_lib.training import History


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_check_train_and_eval(seed):
    rows = bn.gradient_check(seed=seed)
    assert [r.mode for r in rows] == ["train", "eval"]
    assert max(r.worst for r in rows) < 1e-6, rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_torch_batchnorm1d_after_several_steps(seed):
    diff = bn.compare_with_torch(seed=seed, steps=6)
    assert len(diff.items()) == 8 and diff.eval_output > 0  # every quantity was compared
    assert diff.worst < 1e-6, diff


def test_equal_to_torch_with_other_momentum_and_eps():
    diff = bn.compare_with_torch(seed=3, steps=4, momentum=0.5, eps=1e-3, n=5, c=3)
    assert diff.worst < 1e-6, diff


def test_running_statistics_by_hand():
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    state = new_state(1)
    out, cache = batchnorm_forward(x, np.array([2.0]), np.array([0.5]), state, momentum=0.1, eps=1e-5)
    assert state.running_mean[0] == pytest.approx(0.9 * 0 + 0.1 * 2.5)
    assert state.running_var[0] == pytest.approx(0.9 * 1 + 0.1 * 5 / 3)  # unbiased batch variance
    expected = 2.0 * (x[:, 0] - 2.5) / math.sqrt(1.25 + 1e-5) + 0.5  # the batch uses the biased variance
    assert np.allclose(out[:, 0], expected)
    x_hat, gamma, inv_std, train = cache
    assert train is True and inv_std[0] == pytest.approx(1 / math.sqrt(1.25 + 1e-5)) and gamma[0] == 2.0
    before = state.copy()
    ev, cache = batchnorm_forward(x, np.array([2.0]), np.array([0.5]), state, train=False)
    rm, rv = state.running_mean[0], state.running_var[0]
    assert np.allclose(ev[:, 0], 2.0 * (x[:, 0] - rm) / math.sqrt(rv + 1e-5) + 0.5)  # the running statistics
    assert state.running_mean == before.running_mean and state.running_var == before.running_var  # eval: untouched
    assert cache[3] is False


def test_momentum_one_and_zero():
    x = np.array([[0.0, 1.0], [2.0, 5.0]])
    s1, s0 = new_state(2), new_state(2)
    batchnorm_forward(x, np.ones(2), np.zeros(2), s1, momentum=1.0)
    batchnorm_forward(x, np.ones(2), np.zeros(2), s0, momentum=0.0)
    assert np.allclose(s1.running_mean, [1.0, 3.0]) and np.allclose(s1.running_var, [2.0, 8.0])
    assert np.allclose(s0.running_mean, 0.0) and np.allclose(s0.running_var, 1.0)


def test_state_copy_is_independent():
    s = new_state(3)
    c = s.copy()
    batchnorm_forward(np.arange(6.0).reshape(2, 3), np.ones(3), np.zeros(3), s)
    assert np.all(c.running_mean == 0) and not np.all(s.running_mean == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalizes_and_couples_the_batch(seed):
    s = bn.normalization_stats(seed=seed)
    assert s.out_max_abs_mean < 1e-10 and s.out_max_abs_sd_minus_1 < 1e-3
    assert s.in_max_abs_mean > 1 and s.in_max_abs_sd_minus_1 > 1
    c = bn.batch_coupling(seed=seed)
    assert c.train > 1e-3 and c.eval == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_terms_learn_to_undo_the_normalization(seed):
    t = bn.affine_identity_task(seed=seed)
    assert np.mean(t.loss_affine[-20:]) < 0.02 * np.mean(t.loss_plain[-20:])
    assert np.max(np.abs(t.gamma - t.true_sd) / t.true_sd) < 0.05
    assert np.max(np.abs(t.beta - t.true_mean) / t.true_sd) < 0.05


def test_measurements_run_on_the_functions_they_are_given():
    calls = []

    def spy_forward(*args, **kw):
        calls.append("forward")
        return batchnorm_forward(*args, **kw)

    def spy_backward(dout, cache):
        calls.append("backward")
        return batchnorm_backward(dout, cache)

    bn.compare_with_torch(spy_forward, spy_backward, seed=0, steps=2)
    bn.affine_identity_task(spy_forward, spy_backward, seed=0, steps=3)
    assert calls.count("backward") == 3 + 3 and calls.count("forward") > 6


def test_bad_input_is_a_clear_error():
    x, g, b = np.ones((4, 3)), np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(3,\)"):
        batchnorm_forward(x, np.ones(4), b, new_state(3))
    with pytest.raises(ValueError, match="gamma and beta must have shape"):
        batchnorm_forward(x, g, np.zeros((1, 3)), new_state(3))
    for eps in (0.0, -1e-5, float("nan")):
        with pytest.raises(ValueError, match=r"eps=.*: must be a number in \(0, inf\).*small positive"):
            batchnorm_forward(x, g, b, new_state(3), eps=eps)
    for m in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"momentum=.*: must be a number in \[0, 1\]"):
            batchnorm_forward(x, g, b, new_state(3), momentum=m)
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        batchnorm_forward(np.ones((1, 3)), g, b, new_state(3))
    with pytest.raises(ValueError, match="add a batch axis"):
        batchnorm_forward(np.ones(3), g, b, new_state(3))
    with pytest.raises(ValueError, match=r"make the state with new_state\(3\)"):
        batchnorm_forward(x, g, b, new_state(4))
    with pytest.raises(ValueError, match="new_state"):
        batchnorm_forward(x, g, b, {"running_mean": np.zeros(3)})
    with pytest.raises(ValueError, match="dout has shape"):
        batchnorm_backward(np.ones((2, 3)), batchnorm_forward(x, g, b, new_state(3))[1])
    with pytest.raises(ValueError, match=r"momentum=2.0: must be a number in \[0, 1\]"):
        bn_mlp(4, [8], 2, momentum=2.0)
    with pytest.raises(ValueError, match=r"n_features=0: must be a whole number in \[1"):
        new_state(0)
    assert isinstance(new_state(2), BatchNormState)


def test_bn_mlp_structure():
    m = bn_mlp(64, [32, 16], 10)
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert m[0].bias is None and m[6].bias is not None  # BN's beta replaces the hidden biases
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == 64 * 32 + 2 * 32 + 32 * 16 + 2 * 16 + 16 * 10 + 10
    plain = bn_mlp(64, [32], 10, batchnorm=False)
    assert [type(x).__name__ for x in plain] == ["Linear", "ReLU", "Linear"] and plain[0].bias is not None
    assert sum(p.numel() for p in bn_mlp(8, [4], 2, affine=False).parameters()) == 8 * 4 + 4 * 2 + 2


def test_bn_trains_where_plain_does_not_and_eval_pitfalls(one_thread):
    sweep = bn.lr_sweep((0.03, 1.0), epochs=3, n_seeds=2, seed=0)
    assert len(sweep.seeds) == 2 and sweep.treatments == ("bn", "plain", "plain_he")
    assert all(e is not None for e in sweep.epochs_to_target("bn", 0.03))  # BN reaches 90% at lr 0.03 in 3 epochs
    for plain in ("plain", "plain_he"):  # lr 1.0: only BN survives, run by run
        assert all(a > b + 0.3 for a, b in zip(sweep.best_acc("bn", 1.0), sweep.best_acc(plain, 1.0)))
    assert all(b > p for b, p in zip(sweep.n_training_lrs("bn"), sweep.n_training_lrs("plain")))
    rows = sweep.rows()
    assert len(rows) == 6 and [(r.lr, r.treatment) for r in rows][:3] == [(0.03, "bn"), (0.03, "plain"),
                                                                         (0.03, "plain_he")]
    assert rows[0].runs == 2 and rows[0].reached == 2 and rows[0].best_val_acc.n == 2
    model = sweep.model("bn", 0.03)
    model.train(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = bn.eval_pitfalls(model, load("digits", seed=0), seed=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # measuring leaves the model untouched
    assert not model.training  # ... and its mode
    assert p.eval_acc > 0.9
    assert p.train_mode_acc[2] < p.eval_acc - 0.2
    assert abs(p.batch1_eval_acc - p.eval_acc) <= 2 / 288
    assert "more than 1 value per channel" in p.batch1_error
    assert p.buffer_drift > 0.05 and p.flip_fraction_bs8 > 0
    pits = bn.pitfalls_over_runs(sweep, load("digits", seed=0), lr=0.03, seed=0)
    assert len(pits) == 2 and pits[0].eval_acc == p.eval_acc and pits[1].eval_acc > 0.9
    gb = bn.affine_parameters(model)
    assert len(gb) == 4 and gb[0].gamma.shape == (64,)
    assert np.all(gb[0].undo_gamma > 0)
    d = bn.undo_distance(gb)
    assert d.closer_to_init == (d.gamma_from_init < d.gamma_from_undo and d.beta_from_init < d.beta_from_undo)
    init = bn.init_sensitivity(sweep, lr=0.03)  # adds the BN net from He init, same seeds
    assert len(sweep.histories[("bn_he", 0.03)]) == 2 and set(init.best_acc) == {"bn", "bn_he", "plain", "plain_he"}
    assert init.change(True) == [a - b for a, b in zip(init.best_acc["bn_he"], init.best_acc["bn"])]
    assert all(abs(v) < 0.1 for v in init.change(True))
    with pytest.raises(ValueError, match="not one of the sweep's learning rates"):
        bn.init_sensitivity(sweep, lr=0.5)


def test_he_init_keeps_the_signal_scale_and_spares_the_output_layer():
    torch.manual_seed(0)
    m = bn.build("plain_he", 256, [512, 512], 10)
    torch.manual_seed(0)
    default = bn.build("plain", 256, [512, 512], 10)
    lin = [x for x in m if isinstance(x, torch.nn.Linear)]
    assert abs(float(lin[0].weight.detach().std()) - math.sqrt(2 / 256)) < 0.05 * math.sqrt(2 / 256)
    assert abs(float(lin[1].weight.detach().std()) - math.sqrt(2 / 512)) < 0.05 * math.sqrt(2 / 512)
    assert all(float(x.bias.detach().abs().max()) == 0.0 for x in lin[:-1])
    assert torch.equal(lin[-1].weight, default[-1].weight)  # the output layer keeps PyTorch's init
    x = torch.randn(2000, 256, generator=torch.Generator().manual_seed(1))  # not the stream the weights came from
    with torch.no_grad():  # ReLU layers: He keeps the second moment, the default shrinks it ~6x per layer
        h_he, h_def = m[1](m[0](x)), default[1](default[0](x))
        r_he, r_def = float((h_he**2).mean() / (x**2).mean()), float((h_def**2).mean() / (x**2).mean())
    assert 0.8 < r_he < 1.2 and 1 / 8 < r_def < 1 / 4.5
    assert isinstance(bn.build("bn_he", 8, [4], 2)[1], torch.nn.BatchNorm1d)
    with pytest.raises(ValueError, match="treatment='resnet': must be one of"):
        bn.build("resnet", 8, [4], 2)
    with pytest.raises(ValueError, match=r"n_seeds=1: must be a whole number in \[2"):
        bn.lr_sweep((0.1,), n_seeds=1)


def test_stacked_plain_runs_equal_one_fit_per_seed(one_thread):
    """The paired design rests on this: run i of a plain net (all seeds stacked) is what fit trains for seed i."""
    data = load("digits", seed=0)
    stacked = runs.train_runs("plain_he", data, [3, 4], widths=[16, 16], lr=0.05, epochs=2, batch_size=64)
    looped = runs.train_runs("plain_he", data, [3, 4], widths=[16, 16], lr=0.05, epochs=2, batch_size=64,
                                callbacks=[StopAfterSteps(10**6)])
    for a, b in zip(stacked, looped):
        assert np.allclose(a.val_loss, b.val_loss, rtol=1e-4) and np.allclose(a.val_acc, b.val_acc, atol=1e-6)


def test_affine_over_training_records_every_epoch(one_thread):
    run = bn.affine_over_training(epochs=3, n_seeds=2, seed=0, width=16, depth=2)
    assert len(run.seeds) == 2 and [len(d) for d in run.distances] == [3, 3]
    assert run.series("gamma_from_init").shape == (2, 3) and run.series("train_loss").shape == (2, 3)
    g = run.series("gamma_from_init")
    assert np.all(g > 0) and np.all(np.diff(g, axis=1) > 0)  # gamma keeps moving away from 1 while it learns
    assert run.at(3)[1] is run.distances[1][2]
    with pytest.raises(ValueError, match="epoch must be in 1..3"):
        run.at(4)


def test_experiment_honours_panel_callbacks(one_thread):
    h = bn.experiment(epochs=3, callbacks=[StopAfterSteps(2)], seed=1)
    assert h.steps == 2 and len(h) == 1
    assert h.config["batchnorm"] is True and h.config["init"] == "default"
    he = bn.experiment(epochs=1, batchnorm=False, init="he", callbacks=[StopAfterSteps(1)], seed=1)
    assert float(he.config["model"][0].bias.detach().abs().max()) < 0.05  # He init zeroes biases (one step moved them)
    with pytest.raises(ValueError, match="init='xavier': must be one of"):
        bn.experiment(init="xavier")


def test_step_cost_reports_both_and_ratio():
    r = bn.bn_step_cost("cpu", depth=2, width=32, batch_size=16, rounds=3, repeats=3)
    assert r.with_bn > 0 and r.without_bn > 0
    assert r.ratio == pytest.approx(r.with_bn / r.without_bn)
    spread = r.ratio_spread()
    assert len(r.round_ratios) == 3 and spread.n == 3 and spread.low <= spread.median <= spread.high


def _hist(accs, losses=None):
    h = History()
    for i, acc in enumerate(accs):
        h.append({"epoch": i, "train_loss": 1, "train_acc": acc, "val_loss": 1 if losses is None else losses[i],
                  "val_acc": acc, "seconds": 1, "samples_per_s": 1, "step_seconds": 1})
    return h


def _fake_sweep(reach: dict[str, list[list[int | None]]], epochs: int = 4) -> bn.Sweep:
    """reach[treatment][lr index] = the epoch each run reaches 0.9 (None: never)."""
    n = len(next(iter(reach.values()))[0])
    s = bn.Sweep(lrs=[0.01, 0.1], target=0.9, seeds=list(range(n)), epochs=epochs)
    for t, per_lr in reach.items():
        for lr, per_run in zip(s.lrs, per_lr):
            s.histories[(t, lr)] = [_hist([0.95 if (e is not None and i + 1 >= e) else 0.5 for i in range(epochs)])
                                    for e in per_run]
    return s


def test_sweep_summaries_count_per_run():
    s = _fake_sweep({"bn": [[1, 2, 1], [2, 2, None]], "plain": [[None] * 3, [3, None, None]],
                     "plain_he": [[None, 4, None], [2, 3, 3]]})
    assert s.epochs_to_target("plain", 0.1) == [3, None, None]
    assert s.n_training_lrs("bn") == [2, 2, 1] and s.n_training_lrs("plain") == [1, 0, 0]
    assert s.fastest("bn") == [1, 2, 1] and s.fastest("plain") == [3, 5, 5]  # never = epochs + 1
    assert s.common_lrs("bn", "plain_he") == [] and s.common_lrs("bn", "bn") == [0.01]
    assert s.best_lr("bn") == 0.01 and s.best_lr("plain_he") == 0.1


def _good_inputs():
    return dict(norm=bn.normalization_stats(seed=0), torch_diff=bn.TorchDiff(dx=1e-12), coupling=bn.Coupling(0.5, 0.0),
                affine=bn.affine_identity_task(seed=0))


def _pits(gaps):
    return [bn.Pitfalls(0.97, {2: 0.97 - g, 256: 0.96}, 0.2, 0.1, "error", 0.97) for g in gaps]


def _learned(undo_minus_init):
    d = [[bn.UndoDistance(0.03, 0.03 + g, 0.02, 0.02 + g)] * 2 for g in undo_minus_init]
    return bn.AffineOverTraining(0.03, 2, list(range(len(d))), d, [_hist([0.5, 0.5]) for _ in d])


def test_claim_verdicts_follow_the_intervals():
    fast = _fake_sweep({"bn": [[1, 1, 1], [1, 2, 1]], "plain": [[None] * 3, [None] * 3],
                        "plain_he": [[3, 4, 3], [None, None, None]]})
    init = bn.InitSensitivity(0.03, {"bn": [0.97, 0.96, 0.97], "bn_he": [0.97, 0.965, 0.968],
                                     "plain": [0.5, 0.4, 0.6], "plain_he": [0.95, 0.96, 0.94]})
    rows = bn.claims(**_good_inputs(), sweep=fast, pitfalls=_pits([0.5, 0.6, 0.55]), init=init,
                     learned=_learned([0.4, 0.5, 0.45])).rows
    assert len(rows) == 9 and all(r.verdict == "holds" for r in rows), [(r.claim, r.verdict) for r in rows]
    # BN slower than the He control on every run, at as many learning rates: "does not hold"
    slow = _fake_sweep({"bn": [[4, 4, 3], [None] * 3], "plain": [[None] * 3, [None] * 3],
                        "plain_he": [[1, 2, 1], [None] * 3]})
    rows = bn.claims(**_good_inputs(), sweep=slow, pitfalls=_pits([0.5, 0.6, 0.55])).rows
    assert [r.verdict for r in rows[3:5]] == ["does not hold", "inconclusive"]  # as many lrs on every run: 0 ± 0
    # noisy runs that straddle 0: "inconclusive", never a success
    noisy = _fake_sweep({"bn": [[1, 4, 1], [None] * 3], "plain": [[None] * 3, [None] * 3],
                         "plain_he": [[3, 2, 2], [None] * 3]})
    bad_init = bn.InitSensitivity(0.03, {"bn": [0.97, 0.96, 0.97], "bn_he": [0.90, 0.99, 0.93],
                                         "plain": [0.5] * 3, "plain_he": [0.9] * 3})
    far_init = bn.InitSensitivity(0.03, {"bn": [0.97, 0.96, 0.97], "bn_he": [0.90, 0.91, 0.905],
                                         "plain": [0.5] * 3, "plain_he": [0.9] * 3})
    rows = bn.claims(**_good_inputs(), sweep=noisy, pitfalls=_pits([0.5, -0.5, 0.1]), init=bad_init,
                     learned=_learned([0.4, -0.5, 0.3])).rows
    assert rows[3].verdict == "inconclusive" and rows[5].verdict == "inconclusive"
    assert rows[7].verdict == "inconclusive" and rows[8].verdict == "inconclusive"
    rows = bn.claims(**_good_inputs(), sweep=noisy, pitfalls=_pits([-0.3, -0.31, -0.32]), init=far_init,
                     learned=_learned([-0.1, -0.12, -0.11])).rows
    assert [rows[5].verdict, rows[7].verdict, rows[8].verdict] == ["does not hold"] * 3
    bad = dict(_good_inputs(), torch_diff=bn.TorchDiff(eval_output=1e-3), coupling=bn.Coupling(0.5, 0.1))
    rows = bn.claims(**bad, sweep=fast, pitfalls=_pits([0.5, 0.6, 0.55])).rows
    assert [r.verdict for r in rows[:3]] == ["holds", "does not hold", "does not hold"]
