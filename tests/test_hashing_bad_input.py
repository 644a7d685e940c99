"""Lesson 09, bad input (issue 17): every public function the notebook calls refuses nonsense with a
``BadArgument`` naming the argument and the fix (numpy scalars accepted, bools refused), and property tests
(Hypothesis) of the from-scratch hashing: SimHash's collision rate, its codes, the bucket lookup."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib.data import load
from lessons_lib.device import DeviceUnavailableError
from lessons_lib.hashing import lab, reference
from lessons_lib.validate import BadArgument

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
NONSENSE = [True, math.nan, math.inf, -1, 0, "2", None, 10**12, 2.5]


@pytest.fixture(scope="module")
def data():
    return load("mnist1d", seed=0)


# --- refusals, by kind --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", NONSENSE)
@pytest.mark.parametrize("name", ["dim", "n_pairs", "K", "L"])
def test_collision_rates_refuses_bad_sizes(name, bad):
    with pytest.raises((BadArgument, ValueError), match=name):
        lab.collision_rates([0.5], **{name: bad})


@pytest.mark.parametrize("angle", [math.nan, math.inf, -0.1, 4.0, True, "1"])
def test_collision_rates_refuses_angles_outside_0_to_pi(angle):
    with pytest.raises(BadArgument, match=r"angles\[0\].*radians"):
        lab.collision_rates([angle])
    with pytest.raises(BadArgument, match="at least one angle"):
        lab.collision_rates([])


def test_numpy_scalars_are_numbers():
    r = lab.collision_rates(np.radians([np.float32(60.0)]), dim=np.int64(8), n_pairs=np.int32(20), K=np.int64(2),
                            L=np.int64(2), seed=np.int64(1))
    assert r.per_bit.shape == (1,) and r.K == 2
    layer = lab.SampledHidden(np.int64(40), np.int64(100), active_fraction=np.float64(0.1), seed=np.int64(3))
    assert (layer.n_in, layer.n_out, layer.k, layer.seed) == (40, 100, 10, 3)
    assert isinstance(layer.n_in, int) and isinstance(layer.seed, int)


@pytest.mark.parametrize("bad", NONSENSE)
@pytest.mark.parametrize("name", ["n_in", "n_out", "active_fraction", "pool_dim", "seed"])
def test_sampled_hidden_refuses_bad_settings(name, bad):
    if name == "seed" and bad in (0, None):
        return  # valid seeds
    kw = {"n_in": 40, "n_out": 100, name: bad}
    with pytest.raises(BadArgument, match=name):
        lab.SampledHidden(kw.pop("n_in"), kw.pop("n_out"), **kw)


@pytest.mark.parametrize("name, value", [("selector", "nope"), ("selector", 3), ("mode", "batch"), ("mode", None)])
def test_unknown_choices_are_named(name, value):
    with pytest.raises(BadArgument, match=f"{name}=.*must be one of"):
        lab.SampledHidden(40, 100, **{name: value})


@pytest.mark.parametrize("kwargs, match", [
    ({"picker": "hash"}, "picker"), ({"width": True}, "width"), ({"epochs": 1.5}, "epochs"), ({"lr": math.nan}, "lr"),
    ({"lr": 0}, "lr"), ({"batch_size": -1}, "batch_size"), ({"pool_dim": 41}, "pool_dim"), ({"K": 0}, "K"),
    ({"active_fraction": 1.5}, "active_fraction"), ({"seed": -1}, "seed"), ({"simhash": 3}, "simhash"),
])
def test_scratch_experiment_refuses_before_training(data, kwargs, match):
    with pytest.raises((BadArgument, ValueError), match=match):
        lab.scratch_experiment(data, **kwargs)


@pytest.mark.parametrize("seeds, match", [(True, "n="), (0, "n="), (2.5, "n="), ([1, 1], "distinct"), ([], "distinct"),
                                          ([1, -2], r"seeds\[1\]"), ("12", "seeds=")])
def test_sweeps_refuse_bad_seeds(data, seeds, match):
    with pytest.raises(BadArgument, match=match):
        lab.fraction_sweep([0.05], ("lsh",), seeds=seeds, data=data, epochs=1)
    with pytest.raises(BadArgument, match=match):
        lab.scratch_runs(data, seeds=seeds)


@pytest.mark.parametrize("kwargs, match", [({"fractions": [0.0]}, "active_fraction"),
                                           ({"fractions": [math.nan]}, "active_fraction"),
                                           ({"methods": ["hash"]}, "must be one of"),
                                           ({"extra": [("dropout", 2.0)]}, "active_fraction")])
def test_fraction_sweep_refuses_bad_plans_before_training(data, kwargs, match):
    kw = {"fractions": [0.05], "methods": ("lsh",), **kwargs}
    with pytest.raises(BadArgument, match=match):
        lab.fraction_sweep(kw.pop("fractions"), kw.pop("methods"), seeds=2, data=data, epochs=1, **kw)


@pytest.mark.parametrize("name, bad", [("width", 0), ("n_in", True), ("batch_size", 1.5), ("rounds", math.inf),
                                       ("seed", -3), ("active_fraction", 0)])
def test_step_timings_refuses_bad_settings(name, bad):
    with pytest.raises(BadArgument, match=name):
        lab.step_timings(**{name: bad})


def test_a_missing_gpu_is_named(data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceUnavailableError):
        lab.step_timings(device="gpu", rounds=1)
    with pytest.raises(DeviceUnavailableError):
        lab.experiment(device="gpu", data=data, epochs=1)
    with pytest.raises(BadArgument, match="method="):
        lab.experiment(method="hash", data=data)


def test_reference_refuses_what_would_be_silently_wrong():
    planes = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.raises(BadArgument, match="NaN"):  # NaN >= 0 is False: every bit would silently be 0
        reference.simhash(np.full((2, 5), np.nan), planes)
    with pytest.raises(BadArgument, match="K <= 62"):  # 70 bits overflow an int64 code: codes of -1
        reference.simhash(np.zeros((2, 5)), np.ones((1, 70, 5)))
    with pytest.raises(BadArgument, match=r"\(L, K, dim\)"):
        reference.simhash(np.zeros((2, 5)), planes[0])
    with pytest.raises(BadArgument, match=r"x of shape \(2, 6\)"):
        reference.simhash(np.zeros((2, 6)), planes)
    assert reference.simhash([[0.0] * 5], planes).tolist() == [[15, 15, 15]]  # lists are arrays; zero gives 1s
    codes = np.array([[0, 1], [1, 1], [2, 0]])
    for k in (True, 1.5, 0, 4):
        with pytest.raises(BadArgument, match="k="):
            reference.active_units(codes, codes[:1], k)
    with pytest.raises(BadArgument, match="integer codes"):  # 0.5-codes never equal: counts silently all 0
        reference.active_units(codes + 0.5, codes[:1] + 0.5, 1)
    with pytest.raises(BadArgument, match=r"need \(B, 2\)"):
        reference.active_units(codes, np.zeros((1, 3), int), 1)
    counts, active = reference.active_units(codes, codes[:1], np.int64(2))
    assert counts.tolist() == [[2, 1, 0]] and active.tolist() == [[0, 1]]


# --- properties ---------------------------------------------------------------------------------------
@FAST
@given(theta=st.floats(0.05, math.pi - 0.05), dim=st.integers(2, 48), seed=st.integers(0, 2**32 - 1))
def test_simhash_bit_agreement_is_one_minus_theta_over_pi(theta, dim, seed):
    """Charikar's law: one bit of two vectors at angle θ agrees with probability 1 − θ/π; measured over 4,000
    bits it lies within 5 binomial standard errors (a false alarm once in ~3.5 million)."""
    rng = np.random.default_rng(seed)
    x, y = lab.pairs_at_angle(rng, 200, dim, theta)
    planes = rng.standard_normal((4, 5, dim))
    cx, cy = reference.simhash(x, planes), reference.simhash(y, planes)
    rate = lab.agreeing_bits(cx, cy, 5).mean() / 5
    p = 1 - theta / math.pi
    n = 200 * 4 * 5
    assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


@FAST
@given(n=st.integers(1, 6), L=st.integers(1, 4), K=st.integers(1, 8), dim=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1), integer=st.booleans())
def test_simhash_codes_pack_the_signs(n, L, K, dim, seed, integer):
    """Every code is in [0, 2**K) and bit b of table t is exactly (planes[t, b] · x >= 0), including projections
    of exactly zero (integer inputs with ±1 hyperplanes make them common)."""
    rng = np.random.default_rng(seed)
    if integer:
        x, planes = rng.integers(-2, 3, (n, dim)).astype(float), rng.choice([-1.0, 1.0], (L, K, dim))
    else:
        x, planes = rng.standard_normal((n, dim)), rng.standard_normal((L, K, dim))
    codes = reference.simhash(x, planes)
    assert codes.shape == (n, L) and codes.min() >= 0 and codes.max() < 2**K
    proj = np.einsum("nd,tbd->ntb", x, planes)
    bits = (codes[:, :, None] >> np.arange(K)) & 1
    assert np.array_equal(bits.astype(bool), proj >= 0)


@FAST
@given(n_units=st.integers(1, 12), L=st.integers(1, 5), n_codes=st.integers(1, 4), B=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_active_units_counts_and_picks_like_brute_force(n_units, L, n_codes, B, seed, data):
    """Counts equal a brute-force comparison of every code; the pick is the k largest counts, ties to the lower
    index, k distinct units."""
    k = data.draw(st.integers(1, n_units))
    rng = np.random.default_rng(seed)
    units, queries = rng.integers(0, n_codes, (n_units, L)), rng.integers(0, n_codes, (B, L))
    counts, active = reference.active_units(units, queries, k)
    brute = (units[None, :, :] == queries[:, None, :]).sum(-1)
    assert np.array_equal(counts, brute)
    for b in range(B):
        expected = sorted(range(n_units), key=lambda j: (-brute[b, j], j))[:k]
        assert sorted(active[b].tolist()) == sorted(expected)


@FAST
@given(B=st.integers(1, 5), n_in=st.integers(1, 6), n_units=st.integers(1, 10), seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_sampled_layer_is_the_dense_layer_restricted_to_the_active_set(B, n_in, n_units, seed, data):
    k = data.draw(st.integers(1, n_units))
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((B, n_in)), rng.standard_normal((n_units, n_in)), rng.standard_normal(n_units)
    active = np.stack([rng.permutation(n_units)[:k] for _ in range(B)])
    out, cache = reference.sampled_forward(x, w, b, active)
    mask = np.zeros((B, n_units))
    np.put_along_axis(mask, active, 1.0, axis=1)
    assert np.allclose(out, np.maximum(x @ w.T + b, 0) * mask)
    dout = rng.standard_normal((B, n_units))
    dx, dw, db = reference.sampled_backward(dout, cache)
    g = dout * mask * (x @ w.T + b > 0)
    assert np.allclose(dx, g @ w) and np.allclose(dw, g.T @ x) and np.allclose(db, g.sum(0))
