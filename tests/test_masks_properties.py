"""Lesson 04's masks and FastDropout at the public boundary: bad input refused with a clear error (never truncated,
never broadcast, never a raw numpy/torch error), a missing GPU named, and Hypothesis property tests of the mask
generators (shape, dtype, p, seeds: keep rate within exact binomial bounds, reproducibility) and of FastDropout
(exact zeros and scale, the backward's mask is the forward's)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from lessons_lib.binomial_bottleneck import lab, speed
from lessons_lib.binomial_bottleneck.fast_dropout import FastDropout, scaled_mask
from lessons_lib.binomial_bottleneck.reference import MASKS, as_generator, bernoulli_mask
from lessons_lib.device import DeviceUnavailableError
from lessons_lib.validate import BadArgument

NO_CUDA = not torch.cuda.is_available()
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
METHODS = [m for m in MASKS if m != "bits"] + ["auto"]


# --- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2.5, 3), (2, -1), ("2", 3), (True, 3), "23", None, 3.5, (2**20, 2**20)])
def test_bernoulli_mask_refuses_bad_shapes(shape):
    with pytest.raises(BadArgument, match="shape"):
        bernoulli_mask(shape, 0.5, rng=0)


def test_numpy_integers_are_sizes_and_whole_floats_are_not_truncated():
    assert bernoulli_mask((np.int64(2), np.int32(3)), 0.2, rng=0).shape == (2, 3)
    assert bernoulli_mask(np.int64(5), 0.2, rng=0).shape == (5,)


@pytest.mark.parametrize("p", [-0.1, 1.0, float("nan"), float("inf"), True, "0.5", None])
def test_bernoulli_mask_refuses_bad_p(p):
    with pytest.raises(BadArgument, match="p="):
        bernoulli_mask((4, 4), p, rng=0)


@pytest.mark.parametrize("method", ["nope", ["auto"], None, 3])
def test_bernoulli_mask_refuses_unknown_methods(method):
    with pytest.raises(BadArgument, match="method"):
        bernoulli_mask((4, 4), 0.5, method, rng=0)


@pytest.mark.parametrize("rng", [True, -1, "seed", 2.5])
def test_bad_rng_is_refused(rng):
    with pytest.raises((TypeError, BadArgument), match="rng"):
        as_generator(rng)


def test_fast_dropout_refuses_bad_arguments():
    for kwargs, match in (({"p": 1.0}, "p="), ({"p": True}, "p="), ({"method": "nope"}, "method"),
                          ({"p": 0.3, "method": "bits"}, "bits"), ({"rng": 3}, "rng")):
        with pytest.raises(BadArgument, match=match):
            FastDropout(**kwargs)
    layer = FastDropout(0.5).train()
    with pytest.raises(BadArgument, match="torch.Tensor"):
        layer(np.ones((2, 3)))
    with pytest.raises(BadArgument, match="floating-point"):
        layer(torch.ones(2, 3, dtype=torch.int64))


@pytest.mark.skipif(not NO_CUDA, reason="a GPU is here")
def test_a_missing_gpu_is_named():
    with pytest.raises(DeviceUnavailableError):
        lab.dropout_layer_cost(device="cuda", repeats=1)
    with pytest.raises(DeviceUnavailableError):
        lab.cpu_vs_gpu(gpu="cuda")
    with pytest.raises(DeviceUnavailableError):
        lab.torch_epochs({"x": ("cuda", 0.5, "nn.Dropout")}, rounds=1)


def test_torch_epochs_and_speed_refuse_bad_settings():
    with pytest.raises(BadArgument, match="dropout"):
        lab.torch_epochs({"x": ("cpu", 0.5, "Dropout2d")}, rounds=1)
    with pytest.raises(BadArgument, match="rounds"):
        lab.torch_epochs({"x": ("cpu", 0.5, "nn.Dropout")}, rounds=0)
    with pytest.raises(BadArgument, match="configs"):
        lab.torch_epochs({}, rounds=1)
    with pytest.raises(BadArgument, match="threads"):
        speed.fast_vs_f_dropout(threads=(0,))
    with pytest.raises(ValueError, match="p = 0"):
        speed.fast_vs_f_dropout(ps=(0.0,))
    with pytest.raises(BadArgument, match="shape"):
        lab.dropout_layer_cost(shape=(2.5, 3), repeats=1)


def test_backward_refuses_a_gradient_of_another_shape():
    x = torch.ones(4, 6, requires_grad=True)
    out = FastDropout(0.5).train()(x)
    with pytest.raises(RuntimeError, match="shape"):
        out.backward(torch.ones(6))  # torch's own check: a gradient of another shape is never broadcast


# --- properties ------------------------------------------------------------------------------------------------
shapes = st.lists(st.integers(0, 40), min_size=1, max_size=3).map(tuple)
ps = st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.25, 0.5, 0.8, 0.9])


@FAST
@given(shapes, ps, st.sampled_from(METHODS), st.integers(0, 2**31 - 1))
def test_masks_have_shape_dtype_and_are_reproducible(shape, p, method, seed):
    a = bernoulli_mask(shape, p, method, rng=np.random.default_rng(seed))
    b = bernoulli_mask(shape, p, method, rng=np.random.default_rng(seed))
    assert a.shape == shape and a.dtype == bool and np.array_equal(a, b)
    if p == 0.0:
        assert a.all()


@FAST
@given(ps.filter(lambda p: p > 0), st.sampled_from(METHODS), st.integers(0, 2**31 - 1))
def test_keep_rate_within_binomial_bounds(p, method, seed):
    n = 20_000
    kept = int(bernoulli_mask(n, p, method, rng=np.random.default_rng(seed)).sum())
    q = 1 - p
    lo, hi = binom.ppf(1e-6, n, q), binom.isf(1e-6, n, q)  # generous: 40 cases x 1e-6, and p quantized <= 2e-3
    slack = n * 2.0 ** -8 if method == "uint8" else 0
    assert lo - slack <= kept <= hi + slack, (p, method, kept / n)


@FAST
@given(st.lists(st.integers(1, 24), min_size=1, max_size=3).map(tuple), ps.filter(lambda p: p > 0),
       st.sampled_from([torch.float32, torch.float64]), st.integers(0, 2**31 - 1))
def test_fast_dropout_exact_zeros_and_scale_and_its_backward(shape, p, dtype, seed):
    torch.manual_seed(seed)
    x = (torch.rand(*shape, dtype=dtype) + 0.5).requires_grad_(True)
    y = FastDropout(p).train()(x)
    kept = y != 0
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(y[kept], (x / (1 - p))[kept].detach())
    g = torch.rand(*shape, dtype=dtype)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / (1 - p), torch.zeros((), dtype=dtype)))


@FAST
@given(shapes, st.sampled_from([0.1, 0.5, 0.8]), st.integers(0, 2**31 - 1))
def test_scaled_mask_is_the_bool_mask_times_the_scale(shape, p, seed):
    m = scaled_mask(shape, p, "auto", np.random.default_rng(seed))
    assert m.shape == shape and m.dtype == np.float32
    assert set(np.unique(m)) <= {np.float32(0), np.float32(1 / (1 - p))}


def test_a_kept_output_is_never_overwritten_by_the_next_call():
    layer = FastDropout(0.5).train()
    x = torch.ones(8, 16)
    outs = [layer(x) for _ in range(6)]  # more outputs alive than the pool holds
    copies = [o.clone() for o in outs]
    for _ in range(4):
        layer(x)
    assert all(torch.equal(o, c) for o, c in zip(outs, copies))
    assert len({o.data_ptr() for o in outs}) == len(outs)


def test_retain_graph_backward_twice_gives_the_same_gradient():
    x = torch.randn(8, 16, requires_grad=True)
    y = FastDropout(0.3).train()(x)
    y.backward(torch.ones_like(y), retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    y.backward(torch.ones_like(y))
    assert torch.equal(first, x.grad)


def test_expanded_and_non_contiguous_gradients():
    x = torch.randn(8, 16, requires_grad=True)
    y = FastDropout(0.5).train()(x)
    y.sum().backward()  # the upstream gradient is an expanded tensor of ones (stride 0)
    keep = y != 0
    torch.testing.assert_close(x.grad, keep.float() * 2)
    x2 = torch.randn(16, 8).t().requires_grad_(True)  # non-contiguous input
    y2 = FastDropout(0.5).train()(x2)
    y2.backward(torch.ones(8, 16))
    torch.testing.assert_close(x2.grad, (y2 != 0).float() * 2)


# --- the speed measurement and its claim ------------------------------------------------------------------------
def test_fast_vs_f_dropout_measures_every_pair_and_restores_threads():
    before = torch.get_num_threads()
    r = speed.fast_vs_f_dropout(ps=(0.1, 0.5), threads=(1,), shape=(16, 64), rounds=3, number=1)
    assert torch.get_num_threads() == before
    assert set(r.ratios) == {(0.1, 1), (0.5, 1)} and all(len(v) == 3 and min(v) > 0 for v in r.ratios.values())
    assert set(r.ceilings) == set(r.ratios) and all(len(v) == 3 and min(v) > 0 for v in r.ceilings.values())
    assert gc.isenabled()  # switched off only while the rounds run
    lines = r.table().splitlines()
    assert "median [range]" in lines[1] and "a free mask" in lines[2] and len(lines) == 6
    assert r.path == "compiled kernel" and lines[0].startswith("FastDropout (compiled kernel) vs F.dropout")
    slow = speed.fast_vs_f_dropout(ps=(0.2,), threads=(1,), shape=(16, 64), rounds=1, number=1, kernel=False)
    assert slow.path == "numpy path: kernel=False" and len(slow.ratios[(0.2, 1)]) == 1


def test_speed_verdicts_are_judged_on_the_range():
    r = speed.FastVsTorch((4, 4), {(0.1, 1): [6.0, 7.0, 8.0], (0.5, 1): [4.0, 6.0, 7.0], (0.8, 2): [1.0, 2.0, 3.0]})
    assert r.verdicts(5.0) == {(0.1, 1): "holds", (0.5, 1): "inconclusive", (0.8, 2): "does not hold"}
    assert r.spread(0.5, 1).median == 6.0


def test_speed_verdicts_on_the_median_let_one_bad_round_pass_but_not_a_slow_layer():
    hiccup = [6.0 + 0.1 * i for i in range(20)] + [3.0]  # one round of 21 hit by the machine
    slow = [4.0 + 0.1 * i for i in range(21)]  # median 5.0: half the rounds below the goal
    r = speed.FastVsTorch((4, 4), {(0.1, 1): hiccup, (0.2, 1): slow})
    assert r.verdicts(5.0) == {(0.1, 1): "inconclusive", (0.2, 1): "inconclusive"}  # every round
    assert r.verdicts(5.0, on="median") == {(0.1, 1): "holds", (0.2, 1): "inconclusive"}
    assert r.median_ci(0.1, 1).low == pytest.approx(6.4) and "every round" in r.table()
    with pytest.raises(ValueError, match="range"):
        r.verdicts(5.0, on="mean")

