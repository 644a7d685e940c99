"""lessons_lib.binomial_bottleneck: the numpy MLP learns, its profile shows the masks, the fix removes them."""

import numpy as np
import pytest

from lessons_lib.binomial_bottleneck import lab as B
from lessons_lib.data import load
from lessons_lib.masks import bernoulli_mask, keep_probability
from lessons_lib.numpy_layers import net_gradients


@pytest.fixture(scope="module")
def splits():
    return load("mnist1d", seed=0)


def test_train_step_gradients_match_the_checked_net():
    net = B.NumpyMLP(n_in=5, hidden=8, n_out=3, p=0.5, mask_method="auto", seed=0, lr=0.1, momentum=0.0)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    before = [w.astype(np.float64) for w in net.params]
    state = net.rng.bit_generator.state
    net.train_step(x, y)
    net.rng.bit_generator.state = state  # replay the same mask
    keep = bernoulli_mask((4, 8), 0.5, "auto", net.rng)
    grads = net_gradients(x.astype(np.float64), y, tuple(before), keep, 0.5)
    for w0, w1, g in zip(before, net.params, grads):
        np.testing.assert_allclose(w1, w0 - 0.1 * g, rtol=1e-4, atol=1e-5)  # plain SGD step, float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_mlp_learns(splits, seed):
    accs = B.train_numpy("auto", epochs=3, splits=splits, seed=seed)
    assert accs[-1] > 0.25  # chance is 0.10


def test_profile_shows_masks_then_the_fix_removes_them(splits):
    before = B.profile_training("binomial", epochs=1, splits=splits, seed=0)
    after = B.profile_training("auto", epochs=1, splits=splits, seed=0)
    assert "ncalls" in before.table and "_randomstate_binomial" in before.table
    assert "tottime" in before.table.splitlines()[0]
    assert 0 < after.mask_share < before.mask_share < 1
    assert before.mask_share > 3 * after.mask_share
    assert before.mask_seconds > 10 * after.mask_seconds


def test_same_seed_same_training(splits):
    a = B.train_numpy("binomial", epochs=1, splits=splits, seed=1)
    b = B.train_numpy("binomial", epochs=1, splits=splits, seed=1)
    assert a == b


def test_compare_generators_rows():
    rows = B.compare_generators(shape=(64, 256), p=0.5, repeats=3)
    names = [r.method for r in rows]
    assert names[0] == "binomial" and "bits" in names and "auto" in names
    assert names[-2:] == ["floor: random bits", "floor: memory"]
    by = {r.method: r for r in rows}
    assert by["binomial"].speedup == pytest.approx(1.0)
    assert by["auto"].speedup > 3  # the binomial is far slower than random bits, loaded machine or not
    assert by["uint8"].keep_prob == keep_probability("uint8", 0.5)
    rows = B.compare_generators(shape=(64, 256), p=0.1, repeats=2, include_torch=False)
    assert "bits" not in [r.method for r in rows]
    assert {r.method: r for r in rows}["uint8"].keep_prob == 230 / 256
    assert "binomial" in B.generators_table(rows)


def test_epoch_seconds_and_torch_cost(splits, one_thread):
    t = B.epoch_seconds(("binomial", "auto"), splits=splits, repeats=1)
    assert t["binomial"] > t["auto"] > 0
    cost = B.torch_dropout_cost(shape=(64, 512), repeats=3)
    assert cost["F.dropout fwd"] > cost["clone"]


def test_claims_and_checks():
    p_before = B.Profile("binomial", 1, "", 10.0, 7.0, 0.5)
    p_after = B.Profile("auto", 1, "", 3.2, 0.1, 0.51)
    rows = [B.GeneratorRow("binomial", 1.0, 1.0, 0.5, ""), B.GeneratorRow("auto", 0.01, 100.0, 0.5, "")]
    cost = {"clone": 1.0, "torch.rand": 30.0, "bernoulli_ mask": 150.0, "F.dropout fwd": 170.0,
            "F.dropout fwd+bwd": 180.0,
            "FastDropout fwd+bwd": 10.0}
    c = B.lesson_claims(p_before, p_after, 10.0, 3.2, rows, cost)
    holds = [r.holds for r in c.rows]
    assert holds[:7] == [True, True, True, True, True, True, True] and holds[7] is None
    c = B.lesson_claims(p_before, p_after, 10.0, 5.0, rows, {**cost, "FastDropout fwd+bwd": 100.0})
    assert c.rows[3].holds is False and c.rows[6].holds is False  # 2x epoch, 1.7x dropout: shown as failing
    assert B.check_mask_share(0.7, p_before) and not B.check_mask_share(0.3, p_before)
    assert B.check_amdahl(3.33) and not B.check_amdahl(10)
    assert B.check_uint8_keep(230 / 256) and not B.check_uint8_keep(0.9)
