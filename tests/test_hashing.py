"""Tests of lesson 09 (lessons_lib.hashing and the core lsh it uses): SimHash statistics, CSR tables, top-k by
counts, the from-scratch sampled layer and the PyTorch one against the dense layer restricted to the active set,
counters, the experiments' results and bad input. The checks of the learner's code: test_hashing_checks.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lessons_lib import lsh
from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.data import load
from lessons_lib.hashing import lab as H
from lessons_lib.hashing import plots, reference
from lessons_lib.stats import mean_interval
from lessons_lib.timing import Timing

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simhash_bit_collision_rate_is_one_minus_angle_over_pi(seed):
    angles = np.array([0.1, 0.5, 1.0, math.pi / 2, 2.5, 3.0])
    rates = H.collision_rates(angles, dim=32, n_pairs=2000, K=4, L=16, seed=seed)
    # 128,000 (pair, bit) samples per angle: binomial standard error <= 0.0014
    np.testing.assert_allclose(rates.per_bit, 1 - angles / math.pi, atol=0.01)
    assert np.all(np.abs(rates.per_bit - (1 - angles / math.pi)) <= rates.binomial_halfwidth(z=5))
    # 32,000 (pair, table) samples: a whole 4-bit code agrees with probability (1 - θ/π)^4
    np.testing.assert_allclose(rates.per_bucket, (1 - angles / math.pi) ** 4, atol=0.015)
    assert rates.bits == 2000 * 16 * 4 and rates.codes == 2000 * 16 and rates.at(57) == rates.per_bit[2]


def test_simhash_codes_shape_range_and_sign_bits():
    h = lsh.SimHash(5, K=4, L=3, seed=0)
    x = torch.randn(7, 5)
    codes = h.codes(x)
    assert codes.shape == (7, 3) and codes.dtype == torch.int32
    assert int(codes.min()) >= 0 and int(codes.max()) < 2**4
    bits = (x @ h.planes >= 0).view(7, 3, 4).long()
    expected = (bits * torch.tensor([1, 2, 4, 8])).sum(-1)
    assert torch.equal(codes.long(), expected)
    assert torch.equal(h.codes(-x).long(), 15 - expected)  # x and -x disagree on every bit (no exact zeros)
    assert h.mults_per_vector == 5 * 4 * 3


def test_bucket_tables_hand_made():
    # 4 items, L = 2 tables, K = 2 bits
    codes = torch.tensor([[0, 3], [1, 3], [0, 2], [3, 3]])
    t = lsh.BucketTables(K=2, L=2).build(codes)
    assert t.bucket(0, 0).tolist() == [0, 2]
    assert t.bucket(0, 1).tolist() == [1]
    assert t.bucket(0, 2).tolist() == []
    assert t.bucket(1, 3).tolist() == [0, 1, 3]
    assert t.offsets.tolist() == [0, 2, 3, 3, 4, 4, 4, 5, 8]
    q = torch.tensor([[0, 3], [2, 0]])
    assert t.query_counts(q).tolist() == [[2, 1, 1, 1], [0, 0, 0, 0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_csr_query_counts_equal_bruteforce(seed):
    g = torch.Generator().manual_seed(seed)
    K, L, n, B = 4, 9, 57, 13
    item_codes = torch.randint(0, 2**K, (n, L), generator=g, dtype=torch.int32)
    q = torch.randint(0, 2**K, (B, L), generator=g, dtype=torch.int32)
    t = lsh.BucketTables(K, L).build(item_codes)
    assert torch.equal(t.query_counts(q), lsh.collision_counts_bruteforce(q, item_codes))
    assert int(t.offsets[-1]) == n * L


def test_topk_by_counts_hand_made():
    counts = torch.tensor([[3, 1, 4, 1, 5], [0, 2, 2, 0, 1]])
    assert lsh.topk_by_counts(counts, 2, tie_break="index").tolist() == [[4, 2], [1, 2]]
    assert lsh.topk_by_counts(counts, 3, tie_break="index").tolist() == [[4, 2, 0], [1, 2, 4]]
    g = torch.Generator().manual_seed(0)
    r = lsh.topk_by_counts(counts, 2, tie_break="random", generator=g)
    assert r[0].tolist() == [4, 2] and sorted(r[1].tolist()) == [1, 2]
    # a tie at the border is broken at random, but only among the tied items
    picks = {lsh.topk_by_counts(counts, 4, generator=g)[1, 3].item() for _ in range(40)}
    assert picks == {0, 3}


def test_query_with_a_weight_row_finds_that_unit():
    layer = H.SampledHidden(16, 300, selector="lsh", active_fraction=0.02, K=6, L=20, pool_dim=16, seed=0)
    layer.eval()
    x = layer.weight.detach()[[5, 77, 123]].clone()
    counts = layer.lsh_counts(x)
    assert counts[0, 5] == 20 and counts[1, 77] == 20 and counts[2, 123] == 20  # same code in every table
    idx = layer.select(x)
    assert 5 in idx[0].tolist() and 77 in idx[1].tolist() and 123 in idx[2].tolist()


def _dense_restricted(layer: H.SampledHidden, x: torch.Tensor, mask: torch.Tensor):
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    return torch.relu(x @ w.T + b) * mask, w, b


@pytest.mark.parametrize("selector", ["lsh", "random", "topk"])
@pytest.mark.parametrize("mode", ["per_example", "union"])
def test_sparse_layer_forward_backward_equal_dense_restricted_to_active_set(selector, mode):
    torch.manual_seed(0)
    layer = H.SampledHidden(12, 200, selector=selector, active_fraction=0.1, K=5, L=8, pool_dim=4, mode=mode, seed=1)
    x = torch.randn(6, 12)
    out = layer(x)
    idx = layer.last_active
    assert idx.shape == (6, 20)
    mask = torch.zeros(6, 200).scatter(1, idx, 1.0)
    if mode == "union":
        mask = mask.amax(0, keepdim=True).expand(6, -1)
    ref, w, b = _dense_restricted(layer, x, mask)
    torch.testing.assert_close(out, ref)
    g = torch.randn(6, 200)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(layer.weight.grad, w.grad)
    torch.testing.assert_close(layer.bias.grad, b.grad)
    inactive = mask.amax(0) == 0
    assert inactive.any()
    assert torch.all(layer.weight.grad[inactive] == 0) and torch.all(layer.bias.grad[inactive] == 0)


def test_counters_count_layer_hashing_and_rebuilds():
    layer = H.SampledHidden(40, 1000, selector="lsh", active_fraction=0.05, K=6, L=50, pool_dim=8, seed=0,
                            schedule=lsh.RebuildSchedule(first=2, growth=2.0))
    x = torch.randn(16, 40)
    for _ in range(5):
        layer(x).sum().backward()
    c = layer.counters.train
    assert c.examples == 80
    assert c.layer == 2 * 80 * 50 * 40  # forward + weight gradient of the 50 active rows
    assert c.dense == 2 * 80 * 1000 * 40
    assert c.selection == 80 * (8 + 8 * 6 * 50)  # pooling + K*L dot products of length 8
    assert lsh.RebuildSchedule(first=2, growth=2.0).steps(5) == [0, 2]
    assert c.rebuilds == 2
    assert c.rebuild == 2 * 1000 * (8 + 8 * 6 * 50)
    f = c.fractions()
    assert f.layer == pytest.approx(0.05)
    assert f.total == pytest.approx((c.layer + c.selection + c.rebuild) / c.dense)
    assert f.hashing == pytest.approx((c.selection + c.rebuild) / c.dense)
    assert layer.counters.eval.examples == 0


def test_rebuild_schedule_thins_out():
    assert lsh.RebuildSchedule(first=10, growth=2.0).steps(100) == [0, 10, 30, 70]
    s = lsh.RebuildSchedule(first=10, growth=1.3).steps(1000)
    gaps = np.diff(s)
    assert s[0] == 0 and np.all(np.diff(gaps) >= 0) and gaps[-1] > 5 * gaps[0]


def test_dense_and_dropout_baselines():
    dense = H.hashed_mlp(10, 30, 3, selector="dense")
    x = torch.randn(4, 10)
    h = dense[0](x)
    torch.testing.assert_close(h, torch.relu(x @ dense[0].weight.T + dense[0].bias))
    drop = H.hashed_mlp(10, 30, 3, selector="dropout", active_fraction=0.25)
    assert isinstance(drop[2], torch.nn.Dropout) and drop[2].p == pytest.approx(0.75)


def test_short_training_run_and_union_fraction():
    data = load("mnist1d", seed=0).subset_train(256)
    h = H.experiment(method="lsh", active_fraction=0.05, width=200, epochs=1, batch_size=64, data=data,
                             seed=0, callbacks=[StopAfterSteps(3)])
    assert len(h) == 1 and h.steps == 3 and 0.0 <= h.val_acc[0] <= 1.0
    model = h.config["model"]
    u = H.union_fractions(model, data.x_val[:128], batch_sizes=(1, 64))
    assert u.at(1) == pytest.approx(10 / 200) and u.kept == pytest.approx(0.05)
    assert u.at(1) < u.at(64) <= 1.0
    ov = H.overlap_with_topk(model, data.x_val[:64])
    assert 0.0 <= ov.overlap <= 1.0 and ov.chance == pytest.approx(0.05) and 0.0 <= ov.activation_captured <= 1.0
    pools = H.overlap_vs_pool(model, data.x_val[:64], pool_dims=(2, 8, 99))
    assert [p.pool_dim for p in pools] == [2, 8]  # 99 > n_in is skipped
    assert pools[1].hash_cost == pytest.approx((8 + 8 * 6 * 50) / (40 * 200))


@pytest.mark.parametrize("K,L", [(0, 10), (6, 0), (-1, 5), (6, -3), (2.5, 4)])
def test_bad_k_or_l(K, L):
    with pytest.raises(ValueError, match="positive integer"):
        lsh.SimHash(8, K=K, L=L)


def test_k_too_large_for_index_type():
    with pytest.raises(ValueError, match="do not fit the bucket index type"):
        lsh.SimHash(8, K=40, L=2, index_dtype=torch.int32)
    with pytest.raises(ValueError, match="do not fit the bucket index type"):
        lsh.check_k_l(16, 2, torch.int16)
    with pytest.raises(ValueError, match="too many"):
        lsh.BucketTables(K=30, L=4)


@pytest.mark.parametrize("f", [0.0, -0.1, 1.5, float("nan")])
def test_bad_active_fraction(f):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        H.SampledHidden(8, 16, active_fraction=f)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        H.hashed_mlp(8, 16, 2, selector="dropout", active_fraction=f)


def test_other_bad_input():
    with pytest.raises(ValueError, match="selector"):
        H.SampledHidden(8, 16, selector="magic")
    with pytest.raises(ValueError, match="pool_dim"):
        lsh.pooling_matrix(8, 9)
    with pytest.raises(ValueError, match="expects"):
        H.SampledHidden(8, 16)(torch.randn(2, 9))
    with pytest.raises(ValueError, match="k must be"):
        lsh.topk_by_counts(torch.zeros(2, 5), 6)


# --- the from-scratch reference (numpy) ------------------------------------------------------------------------
def test_reference_simhash_is_the_core_simhash_bit_for_bit():
    h = lsh.SimHash(7, K=5, L=4, seed=3)
    x = torch.randn(30, 7, dtype=torch.float64)
    planes = h.planes.double().T.reshape(4, 5, 7).numpy()  # core: (dim, L*K), bit b of table t = column t*K + b
    assert np.array_equal(reference.simhash(x.numpy(), planes), h.codes(x).numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_lookup_equals_the_csr_tables(seed):
    rng = np.random.default_rng(seed)
    units, queries = rng.integers(0, 16, (70, 9)), rng.integers(0, 16, (11, 9))
    counts, active = reference.active_units(units, queries, 6)
    csr = lsh.BucketTables(4, 9).build(torch.as_tensor(units)).query_counts(torch.as_tensor(queries))
    assert np.array_equal(counts, csr.numpy())
    assert np.array_equal(active, lsh.topk_by_counts(csr, 6, tie_break="index").numpy())  # same tie rule, most first


def test_sampled_layer_from_scratch_equals_torch_dense_restricted():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((6, 12)), rng.standard_normal((30, 12)), rng.standard_normal(30)
    active = np.argsort(rng.random((6, 30)), axis=1)[:, :5]
    out, cache = reference.sampled_forward(x, w, b, active)
    mask = torch.zeros(6, 30, dtype=torch.float64).scatter(1, torch.as_tensor(active), 1.0)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = torch.relu(xt @ wt.T + bt) * mask
    np.testing.assert_allclose(out, ref.detach().numpy(), atol=1e-12)
    g = rng.standard_normal((6, 30))
    (ref * torch.as_tensor(g)).sum().backward()
    dx, dw, db = reference.sampled_backward(g, cache)
    for mine, theirs in ((dx, xt), (dw, wt), (db, bt)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), atol=1e-12)
    unused = np.setdiff1d(np.arange(30), active)
    assert np.all(dw[unused] == 0) and np.all(db[unused] == 0)


def test_lsh_picker_finds_a_unit_from_its_own_weights_and_rehashes_on_schedule():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 16))
    calls = []

    def counting_simhash(x, planes):
        calls.append(len(x))
        return reference.simhash(x, planes)

    pick = reference.LshPicker(16, 300, 6, K=6, L=20, pool_dim=16, rng=rng, simhash=counting_simhash,
                               schedule=lsh.RebuildSchedule(first=2, growth=2.0))
    active = pick(w[[5, 77]], w, step=0)
    assert 5 in active[0] and 77 in active[1] and active.shape == (2, 6)
    assert calls == [300, 2]  # the units hashed once, then the queries
    for step in (1, 2, 3):
        pick(w[:1], w, step=step)
    assert calls.count(300) == 2  # rebuilt at steps 0 and 2 only
    assert pick.mults_query == 16 * 6 * 20 + 16 and pick.mults_rehash == 300 * pick.mults_query
    r = reference.RandomPicker(300, 6, rng=rng)(w[:4], w)
    assert r.shape == (4, 6) and all(len(set(row)) == 6 for row in r.tolist())


def test_scratch_experiment_trains_and_lsh_beats_chance_overlap():
    data = load("mnist1d", seed=0).subset_train(512)
    run = H.scratch_experiment(data, picker="lsh", width=200, epochs=2, seed=0)
    rnd = H.scratch_experiment(data, picker="random", width=200, epochs=1, seed=0)
    assert run.k == 10 and len(run.val_acc) == 2 and run.chance == pytest.approx(0.05)
    assert run.val_acc[-1] > 0.15 and run.overlap >= 2 * run.chance  # the pick is far from random
    assert abs(rnd.overlap - rnd.chance) < 0.05
    assert run.code == "the library's reference" and rnd.code == "a random draw (no hashing)"
    mine = H.scratch_experiment(data, picker="lsh", width=200, simhash=lambda x, p: reference.simhash(x, p), seed=0)
    assert mine.code == "your simhash" and mine.val_acc[0] == run.val_acc[0]
    again = H.scratch_experiment(data, picker="lsh", width=200, epochs=2, seed=0)
    assert again.val_acc == run.val_acc and again.overlap == run.overlap  # deterministic from the seed
    with pytest.raises(ValueError, match="picker"):
        H.scratch_experiment(data, picker="topk")


def test_lazy_adam_moves_only_the_given_rows():
    p = np.ones((4, 3))
    opt = H._LazyAdam([p], lr=0.1)
    opt.step([np.ones((4, 3))], [np.array([1, 3])])
    assert np.all(p[[0, 2]] == 1.0) and np.allclose(p[[1, 3]], 0.9)


def _run(method, fraction, acc, mults, seed=0):
    return H.RunResult(method, fraction, acc, acc, 1.0, 1.0, H.MultFractions(*mults), None, torch.nn.Linear(1, 1),
                       seed)


DENSE = (1.0, 0.0, 0.0)
LSH = (0.05, 0.03, 0.01)


def _sweep(lsh_accs, dense_accs, random_accs=None, topk_accs=None):
    """A hand-made sweep: one run per seed and method at 5% (LSH's multiplications: 5% + 3% + 1% = 9%)."""
    seeds = list(range(10, 10 + len(lsh_accs)))
    rows = [_run("dense", 1.0, a, DENSE, s) for s, a in zip(seeds, dense_accs)]
    rows += [_run("lsh", 0.05, a, LSH, s) for s, a in zip(seeds, lsh_accs)]
    rows += [_run("random", 0.05, a, (0.05, 0, 0), s) for s, a in zip(seeds, random_accs or [])]
    rows += [_run("topk", 0.05, a, (0.05, 1.0, 0), s) for s, a in zip(seeds, topk_accs or [])]
    return H.Sweep(rows, seeds)


def test_sweep_pairs_runs_by_seed_and_gives_intervals():
    sw = _sweep([0.40, 0.50, 0.30], [0.45, 0.56, 0.34])
    sw.rows.reverse()  # rows out of seed order: runs() still returns them in the order of the seeds
    assert [r.seed for r in sw.runs("lsh", 0.06)] == [10, 11, 12]  # the closest fraction: 5%
    iv = sw.paired_gap(("dense", None), ("lsh", 0.05))
    assert iv.n == 3 and iv.mean == pytest.approx(0.05)
    # differences 0.05, 0.06, 0.04: sd 0.01, t(2, 0.975) = 4.303 -> half-width 4.303 * 0.01 / sqrt(3)
    assert iv.half_width == pytest.approx(4.303 * 0.01 / math.sqrt(3), rel=1e-3)
    assert sw.test_acc("dense").half_width > 5 * iv.half_width  # pairing cancels the spread the runs share
    assert sw.first("lsh", 0.05).seed == 10 and sw.methods() == ["lsh", "dense"]
    with pytest.raises(ValueError, match="no 'topk' run"):
        sw.runs("topk")


def test_results_table_gives_mean_and_half_width_per_configuration():
    sw = _sweep([0.40, 0.50, 0.30], [0.45, 0.56, 0.34])
    dense = next(ln for ln in H.results_table(sw).splitlines() if ln.startswith("dense"))
    iv = mean_interval([0.45, 0.56, 0.34])
    assert f"{iv.mean:.3f} ± {iv.half_width:.3f}" in dense and " 3 " in dense
    line = H.results_table([_run("lsh", 0.05, 0.3, (0.05, 0.02, 0.01))]).splitlines()[2]
    assert "8.0%" in line and "3.0%" in line and "±" not in line  # total, hashing = selection + rebuilds; 1 run


def test_step_timing_ratios_are_taken_round_by_round():
    t = H.StepTimings(dense=Timing([1.0, 2.0, 4.0], []), per_example=Timing([3.0, 4.0, 4.0], []),
                      union=Timing([2.0, 2.0, 2.0], []))
    r = t.ratio("per_example")
    assert (r.median, r.low, r.high, r.n) == (2.0, 1.0, 3.0, 3)  # 3/1, 4/2, 4/4 (not a ratio of medians)
    assert t.ratio("union").high == 2.0


def test_plots_render():
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    matplotlib.use("Agg")
    rates = H.collision_rates(np.radians([30, 90]), n_pairs=20, K=3, L=4, seed=0)
    assert len(plots.plot_collisions(rates).axes) == 2
    fig = plots.plot_sweep(_sweep([0.3, 0.32], [0.5, 0.52], [0.2, 0.22]))
    assert len(fig.axes) == 2
    assert len([c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]) == 2  # lsh and random
    assert "2 seeds" in fig.axes[0].get_title()
    plt.close("all")


def _claims(sw, overlaps=(0.3, 0.32, 0.31), ratios=(4.0, 5.0, 6.0), scratch=(0.4, 0.42), unions=None):
    dense = Timing([1.0] * len(ratios), [])
    timings = H.StepTimings(dense=dense, per_example=Timing(list(ratios), []), union=Timing(list(ratios), []))
    runs = [H.ScratchRun("lsh", 0.05, 50, [0.3], o, 0.05, 1.0) for o in scratch]
    return H.claims(sw, [H.Overlap(o, 0.05, 0.6) for o in overlaps], timings, scratch=runs, unions=unions)


def _verdict(c, start):
    (row,) = [r for r in c.rows if r.claim.startswith(start)]
    return row.verdict


def _unions(*f32):
    return [H.UnionSizes(0.05, (1, 32), (0.05, f)) for f in f32]


def test_claims_have_three_valued_verdicts_from_intervals():
    sw = _sweep([0.495, 0.50, 0.49], [0.50, 0.505, 0.495], [0.30, 0.31, 0.29], [0.50, 0.50, 0.49])
    c = _claims(sw, unions=(_unions(0.70, 0.72, 0.71), _unions(0.80, 0.81, 0.80)))
    assert _verdict(c, "LSH needs ~5%") == "holds"
    assert "9.0% of dense (a count: the same in all 3 runs)" in c.rows[0].measured
    assert _verdict(c, "…without any loss") == "holds"  # dense - LSH = 0.5 points in every pair
    assert "+0.5 ± 0.0 points (95% CI, 3 paired runs)" in c.rows[1].measured
    assert _verdict(c, "LSH picks better units") == "holds"
    assert _verdict(c, "Control: at the same fraction") == "inconclusive"  # top-k - LSH: +0.5, 0, 0 points
    assert _verdict(c, "Hashing finds") == "holds" and _verdict(c, "…and so does the from-scratch") == "holds"
    assert _verdict(c, "Similar inputs share buckets") == "holds"
    assert _verdict(c, "Fewer multiplications make training faster") == "does not hold"  # 4x to 6x dense
    assert c.rows[-1].verdict == "not measurable"

    # a gap whose interval straddles 1 point is inconclusive, one wholly above it does not hold
    assert _verdict(_claims(_sweep([0.49, 0.50, 0.47], [0.50, 0.50, 0.50])), "…without any loss") == "inconclusive"
    assert _verdict(_claims(_sweep([0.30, 0.31, 0.29], [0.50, 0.50, 0.50])), "…without any loss") == "does not hold"
    # a timing range that includes 1 (LSH as fast as dense in some rounds) is inconclusive
    assert _verdict(_claims(sw, ratios=(0.8, 1.5, 2.0)), "Fewer multiplications") == "inconclusive"
    assert _verdict(_claims(sw, ratios=(0.5, 0.6, 0.9)), "Fewer multiplications") == "holds"
    # an overlap interval across 2 x chance (10%) is inconclusive
    assert _verdict(_claims(sw, overlaps=(0.05, 0.15, 0.10)), "Hashing finds") == "inconclusive"
    # the claim texts carry no measured number: the same rows under every seed
    other = _claims(_sweep([0.2, 0.3], [0.4, 0.5], [0.1, 0.1], [0.4, 0.4]), overlaps=(0.2, 0.3), ratios=(2, 3),
                    unions=(_unions(0.5, 0.6), _unions(0.7, 0.8)))
    assert [r.claim for r in c.rows] == [r.claim for r in other.rows]


def test_fraction_sweep_runs_every_method_once_per_seed():
    data = load("mnist1d", seed=0).subset_train(256)
    kw = dict(data=data, width=100, epochs=1, batch_size=64)
    sw = H.fraction_sweep((0.05, 0.25), ("lsh", "random"), seeds=[3, 4], extra=(("topk", 0.05),), **kw)
    assert sw.seeds == [3, 4] and len(sw.rows) == 2 * (1 + 2 * 2 + 1)
    assert [r.seed for r in sw.runs("random", 0.25)] == [3, 4] and sw.fractions("lsh") == [0.05, 0.25]
    a, b = sw.runs("lsh", 0.05)
    assert a.history.train_loss != b.history.train_loss  # two seeds: two different runs
    assert H.run_one("lsh", 0.05, seed=3, **kw).history.train_loss == a.history.train_loss  # a seed: the same run
    assert H.run_seeds(3) == H.run_seeds(3) and len(set(H.run_seeds(3))) == 3
    with pytest.raises(ValueError, match="distinct"):
        H.fraction_sweep((0.05,), ("lsh",), seeds=[1, 1], data=data)
    assert "2 models" in H.union_table({"LSH": [H.union_fractions(r.model, data.x_val, (1, 8)) for r in (a, b)]})
    table = H.pool_table([a.model, b.model], data.x_val, pool_dims=(2, 8))
    assert len(table.splitlines()) == 3 and "2 models" in table


def test_claims_judge_the_seed_in_the_papers_regime_when_given_and_add_extra_rows():
    """With ``paper`` the seed's accuracy claim is judged on the paper-regime comparison (its rows first), the Adam
    sweep's rows say they are the other recipe, and ``extra`` rows (wide output, crossover) come after them."""
    from lessons_lib.hashing import paper_regime as pr

    sw = _sweep([0.495, 0.50, 0.49], [0.50, 0.505, 0.495], [0.30, 0.31, 0.29], [0.50, 0.50, 0.49])
    mults = pr.Mults(matmul=50.0, selection=30.0, rebuild=10.0, dense=1000.0)
    runs = [pr.PaperRun(m, s, 1000, k, 0.1, acc + 0.01 * s, [0.5, 0.6, 0.6], mults, 3 if m == "lsh" else 0, 1.0)
            for s in (0, 1, 2) for m, k, acc in (("dense", 1000, 0.60), ("lsh", 50, 0.45), ("narrow", 90, 0.58))]
    paper = pr.PaperComparison(pr.DEFAULT, [0, 1, 2], runs, 3.0)
    extra = [("A wide output layer: ≤ 10% of the multiplications within 1 point", "Chen et al. 2020 (SLIDE)",
              "made up", "inconclusive")]
    c = H.claims(sw, [H.Overlap(o, 0.05, 0.6) for o in (0.3, 0.32, 0.31)],
                 H.StepTimings(dense=Timing([1.0] * 3, []), per_example=Timing([4.0] * 3, []),
                               union=Timing([4.0] * 3, [])), paper=paper, extra=extra)
    claims = [r.claim for r in c.rows]
    assert claims[0].startswith("In the paper's regime") and claims[1].startswith("…without any loss")
    assert _verdict(c, "…without any loss") == "does not hold"  # dense − LSH = 15 points in every pair
    assert _verdict(c, "LSH beats a dense net of EQUAL compute") == "does not hold"
    assert claims.index(extra[0][0]) > claims.index("…without any loss in accuracy (criterion: within 1 point of "
                                                    "dense test accuracy)")
    assert _verdict(c, "With Adam and a few epochs instead (every weight row's moments move): LSH within") \
        == "holds"
    assert not any(r.startswith("Control: at the same fraction") for r in claims)  # the paper's controls judge


def test_experiment_reports_multiplications_and_rebuilds_for_the_panel():
    data = load("mnist1d", seed=0).subset_train(256)
    h = H.experiment(method="lsh", data=data, width=100, epochs=1, batch_size=64, K=4, L=8, rebuild_first=2,
                     seed=0)
    layer = H.sampled_layer(h.config["model"])
    f = layer.counters.train.fractions()
    assert h.config["measured"]["mults vs dense"] == f"{f.total:.1%} (hashing {f.hashing:.1%})"
    assert int(h.config["measured"]["rebuilds"]) == layer.counters.train.rebuilds == len(
        lsh.RebuildSchedule(first=2).steps(layer.step))
    assert (layer.K, layer.L) == (4, 8)
    d = H.experiment(method="dropout", data=data, width=100, epochs=1, batch_size=64, seed=0)
    assert d.config["measured"]["mults vs dense"] == "100%"


def test_paper_plot_renders_curves_and_cost_points():
    import matplotlib
    import matplotlib.pyplot as plt

    from lessons_lib.hashing import paper_regime as pr

    matplotlib.use("Agg")
    mults = pr.Mults(matmul=50.0, selection=30.0, rebuild=10.0, dense=1000.0)
    runs = [pr.PaperRun(m, s, 1000, 50, 0.1, 0.5 + 0.01 * s, [0.4, 0.5, 0.5 + 0.01 * s], mults, 0, 1.0)
            for s in (0, 1) for m in ("dense", "lsh")]
    fig = plots.plot_paper(pr.PaperComparison(pr.DEFAULT, [0, 1], runs, 1.0))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2 and "2 seeds" in fig.axes[0].get_title()
    plt.close("all")
