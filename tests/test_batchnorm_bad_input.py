"""Lesson 05's public API under bad input: a clear error naming the argument, the value and the fix (never a raw
numpy/torch error, never a silent wrong result); numpy scalars are numbers, bools are not. Checks turn nonsense
answers into "✗ Not yet". Plus property tests of the from-scratch layer (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lessons_lib.batchnorm import checks
from lessons_lib.batchnorm import lab as bn
from lessons_lib.batchnorm.reference import BatchNormState, batchnorm_backward, batchnorm_forward, bn_mlp, new_state
from lessons_lib.data import load
from lessons_lib.history import History
from lessons_lib.validate import BadArgument

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
X, G, B = np.random.default_rng(0).normal(size=(8, 4)), np.ones(4), np.zeros(4)


def _fwd(**kw):
    args = {"x": X, "gamma": G, "beta": B, "state": new_state(4)} | kw
    return batchnorm_forward(args.pop("x"), args.pop("gamma"), args.pop("beta"), args.pop("state"), **args)


# --- the layer: numbers, flags, shapes, dtypes, finite values --------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"eps": True}, "eps=True: .*got bool"),
    ({"eps": float("nan")}, r"eps=nan: must be a number in \(0, inf\) \(finite\)"),
    ({"eps": -1e-5}, r"eps=-1e-05: must be a number in \(0, inf\)"),
    ({"eps": 0}, r"eps=0: .*small positive number"),
    ({"eps": float("inf")}, "eps=inf"),
    ({"eps": "1e-5"}, "eps='1e-5': .*got str"),
    ({"momentum": 1.5}, r"momentum=1.5: must be a number in \[0, 1\]"),
    ({"momentum": -0.1}, "momentum=-0.1"),
    ({"momentum": float("nan")}, "momentum=nan"),
    ({"momentum": True}, "momentum=True: .*got bool"),
    ({"momentum": None}, "momentum=None"),
    ({"train": "yes"}, "train='yes': must be True .* or False"),
    ({"train": 0}, "train=0: .*got int"),
    ({"train": None}, "train=None"),
    ({"x": X[0]}, "add a batch axis"),
    ({"x": X[None]}, r"shape \(N, C\).*got shape \(1, 8, 4\)"),
    ({"x": np.zeros((0, 4)), "train": False}, r"got shape \(0, 4\)"),
    ({"x": X[:1]}, "more than 1 value per feature"),
    ({"x": np.where(X > 1, np.nan, X)}, "x holds NaN or inf"),
    ({"x": np.where(X > 1, np.inf, X)}, "x holds NaN or inf"),
    ({"x": X > 0}, "x must be an array of real numbers, got dtype bool"),
    ({"x": X + 1j}, "dtype complex128"),
    ({"x": "abc"}, "x must be an array of real numbers"),
    ({"x": np.array([[1.0, None]] * 4)}, "dtype object"),
    ({"gamma": np.ones(3)}, r"gamma and beta must have shape \(4,\)"),
    ({"gamma": 1.0}, r"got gamma \(\) and beta \(4,\)"),
    ({"beta": np.ones((1, 4))}, r"beta \(1, 4\)"),
    ({"gamma": np.full(4, np.nan)}, "gamma holds NaN or inf"),
    ({"state": None}, r"state must be a BatchNormState \(make one with new_state\(4\)\), got NoneType"),
    ({"state": {"running_mean": np.zeros(4)}}, "got dict"),
    ({"state": new_state(3)}, r"state.running_mean has shape \(3,\).*new_state\(4\)"),
    ({"state": BatchNormState(np.zeros(4), -np.ones(4)), "train": False}, "running_var holds negative values"),
    ({"state": BatchNormState(np.zeros(4), np.full(4, np.nan)), "train": False}, "running_var holds NaN"),
])
def test_forward_refuses_with_the_fix(kw, match):
    with pytest.raises(BadArgument, match=match):
        _fwd(**kw)


def test_forward_takes_numpy_scalars_lists_tensors_and_keeps_float32():
    ref, _ = _fwd()
    for kw in ({"eps": np.float32(1e-5)}, {"eps": np.float64(1e-5)}, {"momentum": np.float32(0.1)},
               {"train": np.bool_(True)}, {"x": X.tolist()}, {"x": torch.from_numpy(X)},
               {"state": BatchNormState([0.0] * 4, [1.0] * 4)}):
        out, _ = _fwd(**kw)
        assert np.allclose(out, ref, atol=1e-6)
    assert _fwd(x=X.astype(np.float32), gamma=G.astype(np.float32), beta=B.astype(np.float32))[0].dtype == np.float32
    assert _fwd(x=np.arange(32).reshape(8, 4))[0].dtype == np.float64  # integers are numbers (as float64)


@pytest.mark.parametrize("dout, cache, match", [
    (np.ones((8, 3)), None, r"dout has shape \(8, 3\) but the forward output had shape \(8, 4\)"),
    (np.ones(8), None, r"dout has shape \(8,\)"),
    (1.0, None, r"dout has shape \(\)"),
    (np.full((8, 4), np.nan), None, "dout holds NaN or inf"),
    ("a", None, "dout must be an array of real numbers"),
    (np.ones((8, 4)), "none", r"cache must be the tuple \(x_hat, gamma, inv_std, train\).*got NoneType"),
    (np.ones((8, 4)), (1, 2), "got tuple of length 2"),
    (np.ones((8, 4)), (np.ones((8, 4)), np.ones(3), np.ones(4), True), "cache does not hold what batchnorm_forward"),
])
def test_backward_refuses_wrong_upstream_gradients_and_caches(dout, cache, match):
    cache = _fwd()[1] if cache is None else (None if cache == "none" else cache)
    with pytest.raises(BadArgument, match=match):
        batchnorm_backward(dout, cache)


def test_backward_takes_lists_and_tensors():
    out, cache = _fwd()
    ref = batchnorm_backward(np.ones((8, 4)), cache)
    for dout in (np.ones((8, 4)).tolist(), torch.ones(8, 4)):
        assert all(np.allclose(a, b) for a, b in zip(batchnorm_backward(dout, cache), ref))
    assert all(np.allclose(a, b) for a, b in zip(batchnorm_backward(np.ones((8, 4)), list(cache)), ref))


@pytest.mark.parametrize("call, match", [
    (lambda: new_state(0), r"n_features=0: must be a whole number in \[1"),
    (lambda: new_state(2.5), "n_features=2.5: .*not rounded"),
    (lambda: new_state(True), "n_features=True: .*got bool"),
    (lambda: new_state("4"), "got str"),
    (lambda: new_state(float("nan")), "n_features=nan"),
    (lambda: new_state(None), "n_features=None"),
    (lambda: bn_mlp(4, [8.5], 2), r"widths\[0\]=8.5"),
    (lambda: bn_mlp(4, [True], 2), r"widths\[0\]=True: .*got bool"),
    (lambda: bn_mlp(4, 8, 2), "widths=8: must be a list"),
    (lambda: bn_mlp(4, "64", 2), "widths='64': must be a list"),
    (lambda: bn_mlp(2.5, [8], 2), "n_in=2.5"),
    (lambda: bn_mlp(4, [8], 2, momentum=True), "momentum=True"),
    (lambda: bn_mlp(4, [8], 2, batchnorm="no"), "batchnorm='no': must be True or False"),
    (lambda: bn_mlp(4, [8], 2, activation="swish"), "activation='swish': must be one of"),
])
def test_builders_refuse_with_the_fix(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


def test_builders_take_numpy_scalars():
    assert new_state(np.int64(3)).running_mean.shape == (3,)
    m = bn_mlp(np.int64(4), [np.int32(8)], np.int64(2), momentum=np.float32(0.1))
    assert m[0].out_features == 8 and isinstance(m[0].out_features, int)


# --- the apparatus the notebook calls ------------------------------------------------------------------------
def _sweep():
    h = History()
    h.append({"epoch": 0, "train_loss": 1, "train_acc": 0.9, "val_loss": 1, "val_acc": 0.95, "seconds": 1,
              "samples_per_s": 1, "step_seconds": 1})
    h.config["model"] = bn_mlp(64, [8], 10)
    s = bn.Sweep(lrs=[0.03, 0.1], target=0.9, seeds=[1], epochs=1)
    for t in ("bn", "plain", "plain_he"):
        for lr in s.lrs:
            s.histories[(t, lr)] = [h]
    return s


@pytest.mark.parametrize("call, match", [
    (lambda: bn.lr_sweep((), n_seeds=2), r"lrs=\(\): must be a non-empty list"),
    (lambda: bn.lr_sweep(0.1, n_seeds=2), "lrs=0.1: must be a non-empty list"),
    (lambda: bn.lr_sweep((0.1, -1), n_seeds=2), r"lrs\[1\]=-1"),
    (lambda: bn.lr_sweep((0.1, float("nan")), n_seeds=2), r"lrs\[1\]=nan"),
    (lambda: bn.lr_sweep((0.1, 0.1), n_seeds=2), "holds a learning rate twice"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=True), "n_seeds=True: .*got bool"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2.5), "n_seeds=2.5"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, depth=0), r"depth=0: must be a whole number in \[1"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, depth=2.5), "depth=2.5"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, width=True), "width=True"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, epochs=0), "epochs=0"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, target=1.5), r"target=1.5: must be a number in \(0, 1\]"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, treatments=("bn", "resnet")), "treatments.*='resnet'"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, treatments="bn"), "treatments='bn': must be a non-empty list"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, seed=-1), "seed=-1"),
    (lambda: bn.lr_sweep((0.1,), n_seeds=2, seed=True), "seed=True"),
    (lambda: bn.experiment(depth=-1), "depth=-1"),
    (lambda: bn.experiment(lr=float("nan")), "lr=nan"),
    (lambda: bn.experiment(init="xavier"), "init='xavier': must be one of"),
    (lambda: bn.experiment(seed=2.5), "seed=2.5"),
    (lambda: bn.affine_over_training(epochs=0, n_seeds=2), "epochs=0"),
    (lambda: bn.affine_over_training(n_seeds=1), "n_seeds=1"),
    (lambda: bn.init_sensitivity("sweep"), "sweep must be the Sweep of lr_sweep, got str"),
    (lambda: bn.init_sensitivity(_sweep(), lr=0.5), r"lr=0.5: not one of the sweep's learning rates \[0.03, 0.1\]"),
    (lambda: bn.pitfalls_over_runs([], None), "sweep must be the Sweep"),
    (lambda: _sweep().model("bn", 0.03, run=1), r"run=1: must be a whole number in \[0, 0\]"),
    (lambda: _sweep().model("resnet", 0.03), "treatment='resnet': must be one of"),
    (lambda: _sweep().best_acc("bn", 0.3), "lr=0.3: not one of the sweep's learning rates"),
    (lambda: bn.eval_pitfalls(bn_mlp(64, [8], 10, batchnorm=False), load("digits", seed=0)),
     "model must be a trained network with BatchNorm layers"),
    (lambda: bn.eval_pitfalls(bn_mlp(64, [8], 10), "digits"), "data must be the Splits"),
    (lambda: bn.eval_pitfalls(bn_mlp(64, [8], 10), load("digits", seed=0), batch_sizes=(8, 1)),
     r"batch_sizes\[1\]=1: .*cannot normalize a batch of 1"),
    (lambda: bn.bn_step_cost(rounds=0), "rounds=0"),
    (lambda: bn.bn_step_cost(batch_size=1), "batch_size=1: .*batch of 2 or more"),
    (lambda: bn.gradient_check(n=1), "n=1"),
    (lambda: bn.gradient_check(forward=3), "forward=3: must be a function"),
    (lambda: bn.batch_coupling(n=1), r"n=1: must be a whole number in \[2"),
    (lambda: bn.normalization_stats(c=0), "c=0"),
    (lambda: bn.compare_with_torch(momentum=2.0), "momentum=2.0"),
    (lambda: bn.affine_identity_task(steps=0), "steps=0"),
    (lambda: bn.affine_identity_task(lr=float("inf")), "lr=inf"),
])
def test_apparatus_refuses_before_training(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


def test_apparatus_takes_numpy_scalars():
    s = _sweep()
    assert s.best_acc("bn", np.float32(0.03)) == [0.95]  # float32(0.03) != 0.03 exactly: matched, not refused
    assert s.model("bn", 0.1, run=np.int64(0)) is s.histories[("bn", 0.1)][0].config["model"]
    run = bn.AffineOverTraining(0.03, 2, [1], [[bn.UndoDistance(0, 0, 0, 0)] * 2], [History()])
    assert run.at(np.int64(2)) == [run.distances[0][1]]
    with pytest.raises(BadArgument, match="epoch=True"):
        run.at(True)
    with pytest.raises(BadArgument, match="name='gamma': must be one of"):
        run.series("gamma")


# --- the checks: nonsense from a learner is "✗ Not yet", never a traceback --------------------------------------
class NotAFunction:
    pass


@pytest.mark.parametrize("check", [checks.check_batchnorm_forward, checks.check_batchnorm_backward])
@pytest.mark.parametrize("candidate, says", [
    (NotAFunction, "got the class NotAFunction"),
    (lambda: 1, "the check calls batchnorm_"),
    (lambda *a, **k: None, "must return a tuple of"),
    (lambda *a, **k: (1,), "tuple of length 1"),
    (lambda *a, **k: "x", "got str"),
    (lambda *a, **k: {}["k"], "raised KeyError"),
])
def test_code_checks_turn_nonsense_into_not_yet(check, candidate, says, capsys):
    r = check(candidate)
    assert r.status == "wrong" and r.message.startswith("✗ Not yet:") and says in r.message, r.message


@pytest.mark.parametrize("answer", ["32", "abc", 32.5, True, float("nan"), [1, 2], np.array([5, 32]), {}, 3j,
                                    int, torch.Size([1, 2])])
def test_answer_checks_turn_nonsense_into_not_yet(answer, capsys):
    model = bn_mlp(64, [8, 8], 10)
    r = checks.check_bn_parameters(answer, model)
    starts = ("✗ Not yet: expected a whole number", "✗ Not yet: expected a number", "✗ Not yet: expected one number")
    assert r.status == "wrong" and r.message.startswith(starts), r.message
    r = checks.check_deploy_mode(answer, bn.Pitfalls(0.9, {2: 0.5}, 0.1, 0.1, "err", 0.9))
    assert r.status == "wrong" and r.message.startswith("✗ Not yet:")


def test_answer_checks_take_numpy_and_tensor_numbers_and_refuse_a_wrong_run(capsys):
    model = bn_mlp(64, [8, 8], 10)
    for right in (32, 32.0, np.int64(32), torch.tensor(32)):
        assert checks.check_bn_parameters(right, model).ok
    for bad in (None, "model", bn_mlp(4, [3], 2, batchnorm=False)):
        with pytest.raises(BadArgument, match="model must be the trained network with BatchNorm layers"):
            checks.check_bn_parameters(0, bad)
    with pytest.raises(BadArgument, match="pitfalls must be the Pitfalls"):
        checks.check_deploy_mode("eval", None)


# --- property tests of the from-scratch layer ------------------------------------------------------------------
shapes = st.tuples(st.integers(2, 12), st.integers(1, 6))


@FAST
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), train=st.booleans(), data=st.data())
def test_forward_backward_shapes_dtypes_and_normalization(shape, dtype, train, data):
    n, c = shape
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-50, 50, width=32)))
    gamma = data.draw(hnp.arrays(dtype, (c,), elements=st.floats(0.125, 3, width=32)))
    beta = data.draw(hnp.arrays(dtype, (c,), elements=st.floats(-3, 3, width=32)))
    state = new_state(c)
    out, cache = batchnorm_forward(x, gamma, beta, state, train=train)
    assert out.shape == (n, c) and out.dtype == dtype and np.all(np.isfinite(out))
    assert state.running_mean.shape == (c,) and np.all(state.running_var >= 0)
    if not train:
        assert np.array_equal(state.running_mean, np.zeros(c)) and np.array_equal(state.running_var, np.ones(c))
    dx, dgamma, dbeta = batchnorm_backward(np.ones((n, c), dtype), cache)
    assert dx.shape == (n, c) and dgamma.shape == dbeta.shape == (c,)
    assert np.allclose(dbeta, n)  # d(sum out)/d beta = N per feature
    if train and dtype == np.float64:  # the batch mean of out is beta whatever x is; sum(out) does not depend on x
        assert np.allclose(out.mean(0), beta, atol=1e-3 * (1 + np.abs(beta).max()))
        assert np.allclose(dx, 0, atol=1e-3)


@FAST
@given(shape=shapes, momentum=st.floats(0, 1), eps=st.floats(1e-8, 1.0), seed=st.integers(0, 2**16))
def test_forward_equals_torch_for_any_momentum_and_eps(shape, momentum, eps, seed):
    n, c = shape
    x = np.random.default_rng(seed).normal(2.0, 3.0, size=shape)
    layer = torch.nn.BatchNorm1d(c, momentum=momentum, eps=eps).double()
    state = new_state(c)
    out, _ = batchnorm_forward(x, np.ones(c), np.zeros(c), state, momentum=momentum, eps=eps)
    with torch.no_grad():
        want = layer(torch.from_numpy(x)).numpy()
    assert np.allclose(out, want, atol=1e-6)
    assert np.allclose(state.running_mean, layer.running_mean.numpy())
    assert np.allclose(state.running_var, layer.running_var.numpy())
