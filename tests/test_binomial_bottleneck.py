"""lessons_lib.binomial_bottleneck: the numpy MLP against torch autograd, its profile shows the masks and the fix
removes them, the generator table, FastDropout (nn.Dropout's math and statistics, a correct backward), the claims."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lessons_lib.binomial_bottleneck import lab, plots, reference
from lessons_lib.binomial_bottleneck.reference import FastDropout
from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.data import load
from lessons_lib.models import mlp
from lessons_lib.training import fit


@pytest.fixture(scope="module")
def splits():
    return load("mnist1d", seed=0)


def test_train_step_equals_torch_autograd_with_the_same_mask():
    net = lab.NumpyMLP(n_in=5, hidden=8, n_out=3, p=0.5, mask=lab.dropout_mask(), seed=0, lr=0.1, momentum=0.0)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    before = [torch.tensor(w, requires_grad=True) for w in net.params]
    state = net.rng.bit_generator.state
    net.train_step(x, y)
    net.rng.bit_generator.state = state  # replay the same mask
    keep = torch.tensor(reference.bits_mask((4, 8), net.rng))
    w1, b1, w2, b2 = before
    loss = nn.functional.cross_entropy((torch.relu(torch.tensor(x) @ w1 + b1) * keep / 0.5) @ w2 + b2,
                                       torch.tensor(y))
    loss.backward()
    for w0, w_after in zip(before, net.params):
        np.testing.assert_allclose(w_after, (w0 - 0.1 * w0.grad).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_dropout_mask_dispatches_to_the_two_generators():
    seen = []
    mask = lab.dropout_mask(lambda s, p, g: seen.append(("uint8", p)) or np.ones(s, bool),
                            lambda s, g: seen.append(("bits",)) or np.ones(s, bool))
    mask((2, 3), 0.5, None)
    mask((2, 3), 0.25, None)
    assert seen == [("bits",), ("uint8", 0.25)] and mask.__name__ == "dropout_mask"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_mlp_learns(splits, seed):
    accs = lab.train_numpy(lab.dropout_mask(), epochs=3, splits=splits, seed=seed)
    assert accs[-1] > 0.25  # chance is 0.10


def test_profile_shows_masks_then_the_fix_removes_them(splits):
    before = lab.profile_training(reference.binomial_mask, epochs=1, splits=splits, seed=0)
    after = lab.profile_training(lab.dropout_mask(), epochs=1, splits=splits, seed=0)
    assert "ncalls" in before.table and "binomial_mask" in before.table and before.mask == "binomial_mask"
    assert "tottime" in before.table.splitlines()[0]
    s_before = reference.mask_share(before.stats, lab.MASK_NAMES)
    s_after = reference.mask_share(after.stats, lab.MASK_NAMES)
    assert 0 < s_after < s_before < 1 and s_before > 3 * s_after
    # the fast version nests: dropout_mask calls bits_mask, so adding their cumtimes would count bits twice
    naive = sum(v[3] for k, v in after.stats.stats.items() if k[2] in lab.MASK_NAMES) / after.stats.total_tt
    assert naive > s_after
    own = sum(v[2] for k, v in before.stats.stats.items() if k[2] in lab.MASK_NAMES) / before.stats.total_tt
    assert own < s_before  # tottime alone leaves out numpy's binomial call, where the time goes


def test_same_seed_same_training(splits):
    a = lab.train_numpy(reference.binomial_mask, epochs=1, splits=splits, seed=1)
    b = lab.train_numpy(reference.binomial_mask, epochs=1, splits=splits, seed=1)
    assert a == b


def test_compare_generators_rows():
    rows = lab.compare_generators(shape=(64, 256), p=0.5, repeats=3)
    names = [r.method for r in rows]
    assert names[0] == "binomial" and "bits" in names and "auto" in names
    assert names[-2:] == ["floor: random bits", "floor: memory"]
    by = {r.method: r for r in rows}
    assert by["binomial"].speedup == pytest.approx(1.0)
    assert by["auto"].speedup > 3  # the binomial is far slower than random bits, loaded machine or not
    assert by["uint8"].keep_prob == lab.keep_probability("uint8", 0.5)
    rows = lab.compare_generators(shape=(64, 256), p=0.1, repeats=2, include_torch=False)
    assert "bits" not in [r.method for r in rows]
    assert {r.method: r for r in rows}["uint8"].keep_prob == 230 / 256
    assert "binomial" in lab.generators_table(rows)
    assert len(plots.plot_generators(rows).axes[0].patches) == len(rows)


def test_method_table_states_the_quantization():
    table = lab.method_table()
    assert "0.898438" in table and "auto picks: p=0.1: uint16" in table
    assert lab.keep_probability("uniform", 0.1) == pytest.approx(0.9, abs=2**-24)
    with pytest.raises(ValueError, match="0.5"):
        lab.keep_probability("bits", 0.3)


def test_epoch_seconds_and_torch_cost(splits, one_thread):
    t = lab.epoch_seconds(lab.dropout_mask(), splits=splits, repeats=1)
    assert t.before > t.after > 0 and t.speedup == t.before / t.after
    cost = lab.dropout_layer_cost(shape=(64, 512), repeats=3)
    assert cost.dropout_fwd > cost.clone and cost.clones == cost.dropout_fwd / cost.clone
    assert "FastDropout fwd+bwd" in cost.lines()


# --------------------------------------------------------------------------------------------------
# FastDropout
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_fast_dropout_gradcheck_float64(p):
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
def test_fast_dropout_mean_and_variance_match_nn_dropout(p):
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


def test_fast_dropout_eval_and_p_zero_are_identity_without_rng():
    x = torch.randn(8, 16)
    state = torch.get_rng_state()
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_fast_dropout_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(-0.1)
    with pytest.raises(ValueError, match="bits"):
        FastDropout(0.5, method="nope")


def test_fast_dropout_follows_torch_manual_seed_and_own_rng():
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


def test_fast_dropout_in_mlp_and_fit_reproducible(one_thread):
    digits = load("digits")
    hs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = mlp(64, [32], 10, dropout=0.5, dropout_layer=FastDropout)
        assert isinstance(model[2], FastDropout)
        hs.append(fit(model, digits, epochs=1, callbacks=[StopAfterSteps(5)], seed=0))
    assert hs[0].train_loss == hs[1].train_loss


def test_fast_dropout_vs_nn_dropout_table():
    rows, ok = lab.fast_dropout_vs_nn_dropout(p=0.5, shape=(128, 256), seed=0)
    assert ok and [r.name for r in rows] == ["theory", "FastDropout", "nn.Dropout"]
    assert all(abs(r.dropped - 0.5) < 0.02 for r in rows) and "variance" in lab.layer_stats_table(rows)


def test_claims():
    p_before = lab.Profile("binomial_mask", 1, None, "", 0.5)
    p_after = lab.Profile("dropout_mask", 1, None, "", 0.51)
    rows = [lab.GeneratorRow("binomial", 1.0, 1.0, 0.5), lab.GeneratorRow("auto", 0.01, 100.0, 0.5)]
    cost = lab.DropoutCost(1.0, 30.0, 150.0, 170.0, 180.0, 10.0)
    c = lab.claims(p_before, p_after, 0.7, 0.03, lab.EpochTimes(10.0, 3.2), rows, cost)
    holds = [r.holds for r in c.rows]
    assert holds[:7] == [True] * 7 and holds[7] is None
    slow = lab.DropoutCost(1.0, 30.0, 150.0, 170.0, 180.0, 100.0)
    c = lab.claims(p_before, p_after, 0.7, 0.03, lab.EpochTimes(10.0, 5.0), rows, slow)
    assert c.rows[3].holds is False and c.rows[6].holds is False  # 2x epoch, 1.8x dropout: shown as failing
    assert lab.claims(p_before, p_after, 0.4, 0.2, lab.EpochTimes(10.0, 3.2), rows, cost).rows[0].holds is False
