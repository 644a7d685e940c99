import math

import numpy as np
import pytest
import torch

from lessons_lib.batchnorm import lab as bn
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
        with pytest.raises(ValueError, match="eps must be a small positive number"):
            batchnorm_forward(x, g, b, new_state(3), eps=eps)
    for m in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
            batchnorm_forward(x, g, b, new_state(3), momentum=m)
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        batchnorm_forward(np.ones((1, 3)), g, b, new_state(3))
    with pytest.raises(ValueError, match="add a batch axis"):
        batchnorm_forward(np.ones(3), g, b, new_state(3))
    with pytest.raises(ValueError, match=r"make the state with new_state\(3\)"):
        batchnorm_forward(x, g, b, new_state(4))
    with pytest.raises(TypeError, match="new_state"):
        batchnorm_forward(x, g, b, {"running_mean": np.zeros(3)})
    with pytest.raises(ValueError, match="dout has shape"):
        batchnorm_backward(np.ones((2, 3)), batchnorm_forward(x, g, b, new_state(3))[1])
    with pytest.raises(ValueError, match="momentum must be in"):
        bn_mlp(4, [8], 2, momentum=2.0)
    with pytest.raises(ValueError, match="new_state needs n_features >= 1"):
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
    sweep = bn.lr_sweep((0.03, 1.0), epochs=3, seed=0)
    assert sweep.epochs_to_target(True)[0] is not None  # BN reaches 90% at lr 0.03 within 3 epochs
    assert sweep.final_acc(True)[1] > sweep.final_acc(False)[1] + 0.3  # lr 1.0: only BN survives
    assert sweep.n_training_lrs(True) > sweep.n_training_lrs(False)
    rows = sweep.rows()
    assert len(rows) == 4 and [(r.lr, r.batchnorm) for r in rows][:2] == [(0.03, False), (0.03, True)]
    model = sweep.histories[(True, 0.03)].config["model"]
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
    gb = bn.affine_parameters(model)
    assert len(gb) == 4 and gb[0].gamma.shape == (64,)
    assert np.all(gb[0].undo_gamma > 0)
    d = bn.undo_distance(gb)
    assert d.closer_to_init == (d.gamma_from_init < d.gamma_from_undo and d.beta_from_init < d.beta_from_undo)


def test_experiment_honours_panel_callbacks(one_thread):
    h = bn.experiment(epochs=3, callbacks=[StopAfterSteps(2)], seed=1)
    assert h.steps == 2 and len(h) == 1
    assert h.config["batchnorm"] is True


def test_step_cost_reports_both_and_ratio():
    r = bn.bn_step_cost("cpu", depth=2, width=32, batch_size=16, rounds=2, repeats=3)
    assert r.with_bn > 0 and r.without_bn > 0
    assert r.ratio == pytest.approx(r.with_bn / r.without_bn)


def _fake_sweep(bn_epochs, plain_epochs):
    s = bn.Sweep(lrs=[0.1], target=0.9)
    for flag, e in ((True, bn_epochs), (False, plain_epochs)):
        h = History()
        for i in range(3):
            acc = 0.95 if (e is not None and i + 1 >= e) else 0.5
            h.append({"epoch": i, "train_loss": 1, "train_acc": acc, "val_loss": 1, "val_acc": acc, "seconds": 1,
                      "samples_per_s": 1, "step_seconds": 1})
        s.histories[(flag, 0.1)] = h
    return s


def test_claim_verdicts_follow_the_numbers():
    task = bn.affine_identity_task(seed=0)
    norm = bn.normalization_stats(seed=0)
    good = dict(norm=norm, torch_diff=bn.TorchDiff(dx=1e-12), coupling=bn.Coupling(0.5, 0.0),
                sweep=_fake_sweep(1, None), affine=task,
                pitfalls=bn.Pitfalls(0.97, {2: 0.4, 256: 0.96}, 0.2, 0.1, "error", 0.97))
    assert all(r.holds for r in bn.claims(**good).rows)
    learned = bn.UndoDistance(0.04, 0.5, 0.03, 0.2)
    rows = bn.claims(**good, learned=learned).rows
    assert len(rows) == 8 and rows[6].holds
    assert not bn.claims(**good, learned=bn.UndoDistance(0.04, 0.5, 0.03, 0.01)).rows[6].holds
    bad = dict(good, torch_diff=bn.TorchDiff(eval_output=1e-3), coupling=bn.Coupling(0.5, 0.1),
               sweep=_fake_sweep(3, 2), pitfalls=bn.Pitfalls(0.97, {2: 0.98}, 0.0, 0.1, None, 0.97))
    verdicts = [r.holds for r in bn.claims(**bad).rows]
    assert verdicts == [True, False, False, False, False, True, False]
