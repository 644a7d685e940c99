"""Lesson 03 at the public boundary: the reference layer and the lab's functions refuse bad input with a clear
error (a gradient of another shape is never broadcast, bools are not numbers, a missing GPU is named), and
Hypothesis property tests of the reference dropout (exact zeros and scale, keep rate, the backward's mask)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from lessons_lib.device import DeviceUnavailableError
from lessons_lib.dropout import lab
from lessons_lib.dropout.reference import dropout_backward, dropout_forward
from lessons_lib.validate import BadArgument

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def _cache(shape=(4, 5), p=0.5):
    return dropout_forward(np.ones(shape), p, True, np.random.default_rng(0))[1]


@pytest.mark.parametrize("dout", [np.ones(5), np.ones((1, 5)), np.ones((4, 1)), np.ones((5, 4)), np.ones((2, 4, 5))])
def test_backward_refuses_a_gradient_of_another_shape(dout):
    with pytest.raises(BadArgument, match=r"dout has shape .* mask has shape \(4, 5\)"):
        dropout_backward(dout, _cache())


@pytest.mark.parametrize("cache", [None, (1,), [np.ones((4, 5), bool), 0.5, 3], "cache", (np.ones((4, 5)), 0.5)])
def test_backward_refuses_what_is_not_the_forwards_cache(cache):
    with pytest.raises(BadArgument, match="cache"):
        dropout_backward(np.ones((4, 5)), cache)


@pytest.mark.parametrize("dout", ["x", None, np.array(["a"]), np.ones((4, 5), bool)])
def test_backward_refuses_non_numeric_gradients(dout):
    with pytest.raises(BadArgument, match="dout"):
        dropout_backward(dout, _cache())


@pytest.mark.parametrize("kwargs, match", [({"p": 1.0}, "p="), ({"p": True}, "p="), ({"p": float("nan")}, "p="),
                                           ({"train": "yes"}, "train"), ({"rng": 3}, "rng"),
                                           ({"x": "ones"}, "x"), ({"x": np.ones(3, bool)}, "x"),
                                           ({"x": [[1, 2], [3]]}, "x")])
def test_forward_refuses_bad_arguments(kwargs, match):
    args = {"x": np.ones((2, 3)), "p": 0.5, "train": True, "rng": np.random.default_rng(0)} | kwargs
    with pytest.raises(BadArgument, match=match):
        dropout_forward(**args)


def test_numpy_scalars_and_lists_are_accepted():
    out, (keep, p) = dropout_forward([[1.0, 2.0]], np.float32(0.5), np.bool_(True), np.random.default_rng(0))
    assert out.shape == keep.shape == (1, 2) and p == 0.5


def test_lab_refuses_bad_settings():
    with pytest.raises(BadArgument, match="ps"):
        lab.dropout_sweep(ps=(0.0, 1.0), epochs=1, n_seeds=1)
    with pytest.raises(BadArgument, match="ps"):
        lab.dropout_sweep(ps=(), epochs=1, n_seeds=1)
    with pytest.raises(BadArgument, match="epochs"):
        lab.dropout_sweep(epochs=0, n_seeds=1)
    with pytest.raises(BadArgument, match="n_seeds"):
        lab.dropout_sweep(epochs=1, n_seeds=True)
    with pytest.raises(BadArgument, match="shape"):
        lab.layer_cost(shape=(2.5, 3))
    with pytest.raises(BadArgument, match="repeats"):
        lab.layer_cost(repeats=0)
    with pytest.raises(BadArgument, match="p="):
        lab.compare_with_nn_dropout(p=1.5)


def test_sweep_target_needs_both_rates():
    sweep = lab.Sweep([0.0, 0.2], {0.0: [], 0.2: []}, [1])
    with pytest.raises(BadArgument, match="p=0.5"):
        lab.sweep_target(sweep, p=0.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_a_missing_gpu_is_named(splits=None):
    with pytest.raises(DeviceUnavailableError):
        lab.torch_target(lab.lesson_splits(), device="cuda", seeds=[1], epochs=1)


@FAST
@given(st.lists(st.integers(1, 30), min_size=1, max_size=3).map(tuple), st.sampled_from([0.0, 0.1, 0.5, 0.9]),
       st.integers(0, 2**31 - 1))
def test_forward_zeros_and_scale_and_the_backward_uses_its_mask(shape, p, seed):
    x = np.random.default_rng(seed).uniform(0.5, 1.5, shape)
    out, cache = dropout_forward(x, p, True, np.random.default_rng(seed + 1))
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p))
    dout = np.random.default_rng(seed + 2).standard_normal(shape)
    np.testing.assert_allclose(dropout_backward(dout, cache), np.where(kept, dout / (1 - p), 0.0))
    assert dropout_forward(x, p, False)[0] is x


@FAST
@given(st.sampled_from([0.1, 0.2, 0.5, 0.8]), st.integers(0, 2**31 - 1))
def test_keep_rate_within_binomial_bounds(p, seed):
    n = 20_000
    kept = int(dropout_forward(np.ones(n), p, True, np.random.default_rng(seed))[1][0].sum())
    assert binom.ppf(1e-6, n, 1 - p) <= kept <= binom.isf(1e-6, n, 1 - p)
