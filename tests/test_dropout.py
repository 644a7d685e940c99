"""lessons_lib.dropout: FastDropout's math, backward and statistics vs nn.Dropout; the lesson's helpers."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.data import load
from lessons_lib.dropout import lab as D
from lessons_lib.dropout.lab import FastDropout
from lessons_lib.models import mlp
from lessons_lib.training import History


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_gradcheck_float64(p):
    layer = FastDropout(p).train()
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)

    def f(t):
        torch.manual_seed(0)  # the same mask at every evaluation, as within one training step
        return layer(t)

    assert torch.autograd.gradcheck(f, (x,))
    out = f(x)
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, (out != 0).double() / (1 - p))  # grad = mask * scale


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mean_and_variance_match_nn_dropout(p):
    torch.manual_seed(1)
    x = torch.ones(512, 1024)
    n = x.numel()
    for layer in (FastDropout(p), nn.Dropout(p)):
        out = layer.train()(x)
        vals = out.unique()
        assert len(vals) == 2 and vals[0] == 0 and abs(vals[1].item() - 1 / (1 - p)) < 1e-6
        var = p / (1 - p)  # of x * Bernoulli(1-p) / (1-p) with x = 1
        assert abs(out.mean().item() - 1) < 5 * math.sqrt(var / n)
        assert abs(out.var().item() / var - 1) < 0.02
        assert abs((out == 0).float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_eval_mode_and_p_zero_are_identity_without_rng():
    x = torch.randn(8, 16)
    state = torch.get_rng_state()
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(-0.1)
    with pytest.raises(ValueError, match="bits"):
        FastDropout(0.5, method="nope")


def test_follows_torch_manual_seed_and_own_rng():
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a = FastDropout(0.3)(x)
    torch.manual_seed(3)
    b = FastDropout(0.3)(x)
    c = FastDropout(0.3)(x)
    assert torch.equal(a, b) and not torch.equal(b, c)
    d = FastDropout(0.3, rng=np.random.default_rng(0))(x)
    e = FastDropout(0.3, rng=np.random.default_rng(0))(x)
    assert torch.equal(d, e)


def test_in_mlp_and_fit_reproducible(one_thread):
    splits = load("digits")
    hs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = mlp(64, [32], 10, dropout=0.5, dropout_layer=FastDropout)
        assert isinstance(model[2], FastDropout)
        hs.append(D.fit(model, splits, epochs=1, callbacks=[StopAfterSteps(5)], seed=0))
    assert hs[0].train_loss == hs[1].train_loss


def _hist(vals, seconds=1.0):
    h = History()
    for i, v in enumerate(vals):
        h.append({"epoch": i, "train_loss": 0, "train_acc": 1.0, "val_loss": 0, "val_acc": v, "seconds": seconds,
                  "samples_per_s": 1, "step_seconds": 0.1})
    return h


def test_compute_to_target():
    runs = {"p=0": _hist([0.5, 0.6, 0.7], 1.0), "p=0.5": _hist([0.4, 0.5, 0.6, 0.69, 0.72], 1.5)}
    ctt = D.compute_to_target(runs)
    assert ctt.target == pytest.approx(0.98 * 0.7)
    assert ctt.get("p=0")["epochs"] == 3 and ctt.get("p=0")["seconds"] == pytest.approx(3.0)
    assert ctt.get("p=0.5")["epochs"] == 4 and ctt.get("p=0.5")["seconds"] == pytest.approx(6.0)
    assert D.compute_to_target(runs, target=0.9).get("p=0")["seconds"] is None
    assert "not reached" in D.compute_to_target(runs, target=0.9).table()


def test_train_vs_eval_pitfall():
    torch.manual_seed(0)
    splits = load("digits")
    model = mlp(64, [64], 10, dropout=0.5)
    r = D.train_vs_eval(model, splits, repeats=3)
    assert r["eval_repeat_equal"] and len(set(r["train_mode"])) > 1  # train mode: a new mask every call
    assert not model.training


def test_layer_cost_shows_rng_bound_dropout(one_thread):
    cost = D.dropout_layer_cost(shape=(128, 1024), repeats=5)
    assert set(cost) == set(D.COST_KEYS)
    assert cost["F.dropout fwd"] > 3 * cost["clone"]  # RNG-bound: far above moving the data
    assert cost["FastDropout fwd+bwd"] < cost["F.dropout fwd+bwd"]


def test_checks():
    assert D.check_inverted_scale(1.25) and not D.check_inverted_scale(0.8)
    assert D.check_eval_output("x") and not D.check_eval_output("0.5*x")
    assert D.check_expected_kept(98304) and not D.check_expected_kept(32768)
    assert D.check_mode_for_validation("model.eval()") and not D.check_mode_for_validation("train")
    assert not D.check_inverted_scale(...)


def test_claims_from_synthetic_runs():
    sweep = D.Sweep([0.0, 0.5], {0.0: _hist([0.5, 0.6, 0.62]), 0.5: _hist([0.4, 0.6, 0.66])})
    sweep.histories[0.5].train_acc[-1] = 0.8
    ctt = D.compute_to_target({"p=0": sweep.histories[0.0], "p=0.5": sweep.histories[0.5]})
    cost = {"clone": 1.0, "torch.rand": 20.0, "bernoulli_ mask": 90.0, "F.dropout fwd": 100.0,
            "F.dropout fwd+bwd": 110.0,
            "FastDropout fwd+bwd": 5.0}
    c = D.lesson_claims(sweep, ctt, 0.5, cost)
    verdicts = [r.holds for r in c.rows]
    assert verdicts[0] is True  # gap 0.38 at p = 0
    assert verdicts[1] is True  # gap 0.14 at p = 0.5
    assert verdicts[2] is True  # 0.66 > 0.62
    assert c.rows[-1].holds is True and any(r.holds is None for r in c.rows)  # no GPU row
