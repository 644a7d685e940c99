"""lessons_lib.binomial_bottleneck: the numpy MLP against torch autograd, its profile shows the masks and the fix
removes them, the generator table, FastDropout (nn.Dropout's math and statistics, a correct backward), the claims."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lessons_lib.binomial_bottleneck import fix, lab, plots, reference
from lessons_lib.binomial_bottleneck.fast_dropout import FastDropout
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
    before = lab.profile_training(reference.binomial_mask, epochs=2, splits=splits, seed=0)
    after = lab.profile_training(lab.dropout_mask(), epochs=1, splits=splits, seed=0)
    assert "ncalls" in before.table and "binomial_mask" in before.table and before.mask == "binomial_mask"
    assert "tottime" in before.table.splitlines()[0]
    assert len(before.epoch_stats) == 2  # one profiler per epoch, and their sum
    assert before.stats.total_tt == pytest.approx(sum(s.total_tt for s in before.epoch_stats))
    s_before = reference.mask_share(before.stats, lab.MASK_NAMES)
    s_after = reference.mask_share(after.stats, lab.MASK_NAMES)
    assert 0 < s_after < s_before < 1 and s_before > 3 * s_after
    # the fast version nests: dropout_mask calls bits_mask, so adding their cumtimes would count bits twice
    naive = sum(v[3] for k, v in after.stats.stats.items() if k[2] in lab.MASK_NAMES) / after.stats.total_tt
    assert naive > s_after
    own = sum(v[2] for k, v in before.stats.stats.items() if k[2] in lab.MASK_NAMES) / before.stats.total_tt
    assert own < s_before  # tottime alone leaves out numpy's binomial call, where the time goes


def test_compare_fix_pairs_seeds_times_masks_and_keeps_the_control_free(splits):
    fast = lab.dropout_mask()
    fx = fix.compare_fix(fast, seeds=[5, 6], epochs=2, splits=splits)
    assert fx.seeds == [5, 6] and len(fx.rounds) == 4 and len(fx.profiled) == 2
    assert [(r.seed, r.epoch) for r in fx.rounds] == [(5, 0), (5, 1), (6, 0), (6, 1)]
    for r in fx.rounds:
        assert set(r.cpu) == set(r.wall) == set(r.mask) == set(fix.VERSIONS)
        assert all(0 < r.mask[v] < r.cpu[v] for v in fix.VERSIONS)
        assert r.mask["free"] < r.mask["after"] < r.mask["before"]  # free masks cost (almost) nothing
    assert all(s > 0.3 for s in fx.shares("before")) and all(s < 0.2 for s in fx.shares("after"))
    assert fx.bounds() == pytest.approx([1 / (1 - s) for s in fx.shares()])
    assert fx.speedups(clock="wall") == pytest.approx([r.wall["before"] / r.wall["after"] for r in fx.rounds])
    assert all(q.profile > 0.3 and q.timer > 0.3 for q in fx.profiled)
    # the same seed trains the same "before" net: paired with train_numpy's run of that seed
    assert fx.val_before[0] == lab.train_numpy(reference.binomial_mask, epochs=2, splits=splits, seed=5)[-1]
    assert fx.accuracy_diff().n == 2 and "free masks (control)" in fx.table() and "cProfile" in fx.amdahl()


def test_timed_and_free_masks():
    g = np.random.default_rng(0)
    timed = fix.TimedMask(lab.dropout_mask())
    m = timed((4, 8), 0.5, g)
    assert m.shape == (4, 8) and m.dtype == bool and timed.seconds > 0 and "timed_" in timed.__name__
    free = fix.FreeMask(lab.dropout_mask(), np.random.default_rng(1))
    assert free((4, 8), 0.5, g) is free((4, 8), 0.5, g)  # drawn once, then reused
    assert free((2, 8), 0.5, g).shape == (2, 8)  # the last, smaller batch gets its own


def _fix_runs(speedup=3.0, free=3.1, share=0.66, after_share=0.04, acc=(0.40, 0.41), n=4):
    """A FixRuns whose every round has the given speedups and shares (times in seconds)."""
    rounds = []
    for i in range(n):
        before = 0.1 * (1 + 0.01 * i)
        cpu = {"before": before, "after": before / speedup, "free": before / free}
        mask = {"before": share * before, "after": after_share * cpu["after"], "free": 1e-5}
        rounds.append(fix.EpochRound(i, 0, cpu, dict(cpu), mask))
    jitter = [0.0, 0.004, -0.004, 0.002][:n]
    return fix.FixRuns(list(range(n)), 1, rounds, [acc[0] + j for j in jitter], [acc[1] + j for j in jitter],
                       [fix.ProfiledPair(share, share, share - 0.02)] * n)


def test_fix_runs_arithmetic():
    fx = _fix_runs()
    assert fx.speedups() == pytest.approx([3.0] * 4) and fx.speedups("free") == pytest.approx([3.1] * 4)
    assert fx.bounds() == pytest.approx([1 / 0.34] * 4)
    assert fx.rest("before")[0] == pytest.approx(0.1 * 0.34)
    assert fx.accuracy_diff().mean == pytest.approx(0.01) and fx.accuracy_diff().half_width == pytest.approx(0)
    timer, read = fx.profiler_effect()
    assert timer.mean == pytest.approx(0) and read.mean == pytest.approx(-0.02)
    assert fx.wall_estimates(k=2) == pytest.approx([3.0, 3.0])


def test_run_seeds_follow_the_course_seed(monkeypatch):
    monkeypatch.setenv("LESSONS_SEED", "0")
    a = fix.run_seeds(3)
    monkeypatch.setenv("LESSONS_SEED", "1")
    assert len(set(a)) == 3 and not set(a) & set(fix.run_seeds(3))


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
    assert by["binomial"].speedup == pytest.approx(1.0) and by["binomial"].ratios == pytest.approx([1.0] * 3)
    assert by["auto"].speedup > 3 and min(by["auto"].ratios) > 3  # far slower than random bits, busy machine or not
    assert len(by["auto"].times) == 9 and len(by["auto"].ratios) == 3  # 3 groups of 3 rounds
    assert by["uint8"].keep_prob == lab.keep_probability("uint8", 0.5)
    rows = lab.compare_generators(shape=(64, 256), p=0.1, repeats=2, include_torch=False)
    assert "bits" not in [r.method for r in rows]
    assert {r.method: r for r in rows}["uint8"].keep_prob == 230 / 256
    assert "binomial" in lab.generators_table(rows)
    assert len(plots.plot_generators(rows).axes[0].patches) == len(rows)


def test_method_table_states_the_quantization():
    table = lab.method_table()
    assert "0.898438" in table and "auto picks: p=0.1: table" in table
    assert lab.keep_probability("uniform", 0.1) == pytest.approx(0.9, abs=2**-24)
    with pytest.raises(ValueError, match="0.5"):
        lab.keep_probability("bits", 0.3)


def test_interval_helpers():
    assert lab.interval_or_value([2.0]).n == 1 and lab.interval_or_value([1.0, 3.0]).mean == 2.0


def test_torch_cost_and_epochs(splits, one_thread):
    cost = lab.dropout_layer_cost(shape=(64, 512), repeats=2)
    assert cost.dropout_fwd > cost.clone and cost.clones == cost.dropout_fwd / cost.clone
    assert len(cost.rounds["fwd"]) == 6 and len(cost.ratios("fwd", "clone")) == 2
    assert min(cost.ratios("fwd", "clone")) > 1 and "FastDropout fwd+bwd" in cost.lines()
    small = splits.subset_train(256)
    ep = lab.torch_epochs({"off": ("cpu", 0.0, "nn.Dropout"), "on": ("cpu", 0.5, "FastDropout")}, rounds=2,
                          splits=small, hidden=64)
    assert ep.clock == "CPU time" and len(ep.seconds["off"]) == 2 and len(ep.ratios("on", "off")) == 2
    assert "FastDropout" in ep.table()
    both = lab.cpu_vs_gpu(rounds=1, splits=small, gpu="cpu")  # the GPU path, run on the CPU twice
    assert set(both.seconds) == {"CPU, dropout off", "CPU, dropout on", "GPU, dropout off", "GPU, dropout on"}
    assert both.clock == "CPU time"  # every configuration on the CPU: CPU time (a real GPU: wall time)


def test_seed_amdahl_arithmetic():
    a = lab.seed_amdahl()
    assert a.share == pytest.approx(5912.656 / 8431.153) and a.bound == pytest.approx(1 / (1 - a.share))
    assert 3.3 < a.bound < 3.4 and a.rest_factor == pytest.approx(10 * (1 - a.share))
    assert lab.seed_amdahl(0.5, 2.0).rest_factor == pytest.approx(1.0)  # a 2x from a 50% share: the rest unchanged


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


def _cost(fast_ratio=6.0, clones=150.0, rng_share=0.9):
    fwd = clones * 1e-6
    rounds = {"clone": [1e-6] * 6, "rand": [30e-6] * 6, "bernoulli": [rng_share * fwd] * 6, "fwd": [fwd] * 6,
              "fwd_bwd": [1.05 * fwd] * 6, "fast": [1.05 * fwd / fast_ratio] * 6}
    return lab.DropoutCost(*(r[0] for r in rounds.values()), rounds)


def _on_off(share=0.6):
    return lab.TorchEpochs({"no dropout": ("cpu", 0.0, "nn.Dropout"), "nn.Dropout": ("cpu", 0.5, "nn.Dropout")},
                           {"no dropout": [1 - share] * 3, "nn.Dropout": [1.0, 1.0, 1.0]}, "CPU time")


def test_claims():
    rows = [lab.GeneratorRow("binomial", 1.0, 1.0, 0.5, [1.0] * 3), lab.GeneratorRow("auto", 0.01, 100.0, 0.5,
                                                                                     [100.0, 98.0, 102.0])]
    c = lab.claims(_fix_runs(), rows, _cost(), _on_off())
    v = [r.verdict for r in c.rows]
    assert v[:8] == ["holds"] * 8 and v[8:] == ["not measurable"] * 2
    assert "95% CI" in c.rows[0].measured and "cProfile" in c.rows[0].measured
    bad = lab.claims(_fix_runs(share=0.4, after_share=0.2, speedup=2.0, free=3.0, acc=(0.40, 0.45)), rows,
                     _cost(fast_ratio=2.0, clones=5.0), _on_off(0.3))
    assert [r.verdict for r in bad.rows[:8]] == ["does not hold", "holds"] + ["does not hold"] * 6
    texts = [r.claim for r in lab.claims(_fix_runs(speedup=2.5), rows, _cost(4.0), _on_off(0.55)).rows]
    assert texts == [r.claim for r in c.rows]  # no measured number in a claim: the same text under any seed
    gpu = lab.TorchEpochs({k: ("cpu", 0.0, "nn.Dropout") for k in ("CPU, dropout off", "CPU, dropout on",
                                                                  "GPU, dropout off", "GPU, dropout on")},
                          {"CPU, dropout off": [1.0] * 3, "CPU, dropout on": [3.0] * 3,
                           "GPU, dropout off": [0.9] * 3, "GPU, dropout on": [0.25] * 3}, "wall time")
    g = lab.claims(_fix_runs(), rows, _cost(), _on_off(), gpu=gpu)
    assert [r.verdict for r in g.rows[-2:]] == ["holds", "holds"]  # 12x with dropout on, 1.1x with it off


def test_claims_use_the_speed_measurement_with_a_range():
    from lessons_lib.binomial_bottleneck import speed

    rows = [lab.GeneratorRow("binomial", 1.0, 1.0, 0.5, [1.0] * 3),
            lab.GeneratorRow("auto", 0.01, 100.0, 0.5, [100.0, 98.0, 102.0])]
    fast = speed.FastVsTorch((4, 4), {(p, 1): [2.5, 3.0, 4.0] for p in speed.PS})
    row = lab.claims(_fix_runs(), rows, _cost(), _on_off(), fast=fast).rows[6]
    assert "every p in {0.1, 0.2, 0.5, 0.8}" in row.claim and "[2.5, 4.0]" in row.measured
    assert row.verdict == "holds"
    slow = speed.FastVsTorch((4, 4), {(0.1, 1): [1.5, 1.8, 2.5], (0.5, 1): [3.0] * 3})
    assert lab.claims(_fix_runs(), rows, _cost(), _on_off(), fast=slow).rows[6].verdict == "inconclusive"
