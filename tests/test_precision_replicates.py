"""Lesson 07 over several seeds: the stacked runs equal the single ones, and the statistics behind the claims
(speed ratios per timing round, the convergence control, paired differences, the spread ratio, the chaos
comparison) give the right values and verdicts on hand-made inputs."""

import math

import pytest
import torch
from scipy.stats import f as f_dist

from lessons_lib.data import load
from lessons_lib.history import History
from lessons_lib.models import mlp
from lessons_lib.precision import formats as F
from lessons_lib.precision import hypotheses as H
from lessons_lib.precision import lab as L
from lessons_lib.precision import replicates as RP
from lessons_lib.stats import Spread
from lessons_lib.timing import Timing


@pytest.fixture(scope="module")
def small():
    return load("mnist1d", seed=0).subset_train(512)  # 4 batches of 128 exactly: every sampler must run to its end


# --- the stacked runs are the single runs ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_each_stacked_run_is_the_single_run(small, dtype, one_thread):
    rep = RP.train_replicates(small, [3, 7, 11], dtype=dtype, epochs=4, width=32)
    for i, s in enumerate(rep.seeds):
        one = L.train_precision(small, dtype=dtype, epochs=4, width=32, seed=s)
        tol = 1e-4 if dtype == "fp32" else 2e-2  # bf16: batched and single products round differently
        assert rep.histories[i].val_loss == pytest.approx(one.history.val_loss, rel=tol)
        assert rep.lost_share[i] == pytest.approx(one.lost_share, abs=0.03 if dtype == "bf16" else 1e-3)
    assert rep.state_bytes == one.state_bytes  # weights, gradients, momentum of one run
    assert rep.label == f"{dtype} pure" and rep.interval().n == 3


def test_stored_and_autocast_runs_train(small, one_thread):
    sto = RP.train_replicates(small, [0, 1], dtype="bf16", mode="stored", rounding="stochastic", epochs=2, width=32)
    near = RP.train_replicates(small, [0, 1], dtype="bf16", mode="stored", epochs=2, width=32)
    auto = RP.train_replicates(small, [0, 1], dtype="bf16", mode="autocast", epochs=2, width=32)
    for m in sto.models + near.models:  # stored weights stay on the bf16 grid
        for p in m.parameters():
            assert torch.equal(p, p.to(torch.bfloat16).float())
    assert auto.lost_share[0] < 0.01 < near.lost_share[0]  # fp32 weights keep their updates
    assert all(h.train_loss[-1] < h.train_loss[0] for h in auto.histories)  # it learns


def test_lost_updates_counted_on_every_kth_step(small, one_thread):
    every = RP.train_replicates(small, [0, 1], dtype="bf16", epochs=3, width=32)
    some = RP.train_replicates(small, [0, 1], dtype="bf16", epochs=3, width=32, lost_every=3)
    assert len(every.lost_per_step[0]) == 12 and len(some.lost_per_step[0]) == 4
    assert some.lost_per_step[0] == every.lost_per_step[0][::3]  # the same training, a sample of its steps
    assert some.lost_every == 3


def test_bad_runs_are_refused(small):
    with pytest.raises(ValueError, match="identical"):
        RP.train_replicates(small, [1, 1], epochs=1)
    with pytest.raises(ValueError, match="one flip entry per seed"):
        RP.train_replicates(small, [1, 2], flips=[None], epochs=1)
    with pytest.raises(ValueError, match="unperturbed"):
        RP.train_replicates(small, [1, 1], flips=[5, None], track=True, epochs=1)
    with pytest.raises(ValueError, match="lost_every"):
        RP.train_replicates(small, [1], lost_every=0, epochs=1)
    with pytest.raises(ValueError, match="mode='stored'"):
        RP.train_replicates(small, [1], dtype="bf16", rounding="stochastic", epochs=1)


def test_tracking_a_flipped_bit(small, one_thread):
    rep = RP.train_replicates(small, [5, 5, 6], flips=[None, 40, None], track=True, epochs=2, width=32)
    assert rep.distance[0] == [0.0, 0.0, 0.0] and rep.disagreement[0] == [0.0, 0.0, 0.0]
    torch.manual_seed(5)
    w = torch.cat([p.detach().flatten() for p in mlp(40, [32, 32], 10).parameters()])  # float32
    ulp = (torch.nextafter(w[40], torch.tensor(math.inf)) - w[40]).abs().item()  # one float32 step (same size down)
    assert rep.distance[1][0] == pytest.approx(ulp / w.double().norm().item(), rel=0.01)
    assert rep.distance[2][0] > 0.5  # another seed: other weights altogether
    plain, flipped = rep.split()
    assert plain.seeds == [5, 6] and flipped.seeds == [5] and flipped.flips == [40]
    assert plain.select([1]).histories[0] is rep.histories[2] and plain.ref_seed == 5


# --- speed ratios, round by round --------------------------------------------------------------------------
def test_speed_ratios_are_taken_round_by_round():
    t = {"fp32": Timing(times=[1.0, 2.0, 1.0], warmup_times=[]), "fp64": Timing(times=[2.0, 3.0, 2.5], warmup_times=[])}
    s = F.speed_ratios(t, "fp32", "fp64")  # fp64's time / fp32's time in each round
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.5, 2.5, 3)
    # the ratio of the medians would hide that round 2 was slow for both: 2.5 / 1.0
    assert F.speed_ratios(t, "fp64", "fp32").high == pytest.approx(1 / 1.5)


@pytest.mark.parametrize("name, spread, label", [
    ("bf16", Spread(3.5, 2.4, 4.5, 9), "natively fast"),
    ("bf16", Spread(1.3, 1.1, 1.5, 9), "unclear"),  # straddles 1.2
    ("fp16", Spread(1.0, 0.9, 1.1, 9), "about fp32 speed"),
    ("fp16", Spread(0.5, 0.4, 0.6, 9), "emulated / slow"),
    ("fp64", Spread(0.45, 0.4, 0.6, 9), "fp32 is 2.2× faster"),
    ("fp64", Spread(0.95, 0.8, 1.1, 9), "unclear"),
])
def test_dtype_verdict_reads_the_whole_range(name, spread, label):
    assert F._verdict(name, spread).startswith(label)


def test_epoch_timing(small, one_thread):
    t = L.epoch_timing(small, [("fp32", "pure"), ("bf16", "autocast"), ("fp64", "autocast")], rounds=3, width=32)
    assert list(t.timings) == ["fp32 pure", "autocast bf16"]  # autocast in fp64 does not exist: skipped
    assert t.rounds == 3 and t.ratio("fp32 pure").median == 1.0
    assert t.seconds("autocast bf16").n == 3 and t.seconds("autocast bf16").low > 0


# --- the convergence control, paired differences ------------------------------------------------------------
def _rep(val_acc: list[list[float]], train_acc: float = 1.0, label: str = "fp32 pure", **kw) -> RP.Replicates:
    hs = []
    for curve in val_acc:
        h = History()
        for e, v in enumerate(curve):
            h.append({"epoch": e, "train_loss": 0.1, "train_acc": train_acc, "val_loss": 1.0, "val_acc": v,
                      "seconds": 0.1, "samples_per_s": 1.0, "step_seconds": 0.01})
        hs.append(h)
    n = len(val_acc)
    return RP.Replicates(label, label.split()[0], "pure", "nearest", list(range(n)), hs, [0.0] * n,
                         [{"0.weight": 0.0}] * n, [[0.0]] * n, 100, [None] * n, **kw)


def test_convergence_control_on_values():
    flat = _rep([[0.3] * 8 + [0.6] * 16, [0.3] * 8 + [0.61] * 16, [0.3] * 8 + [0.59] * 16])
    c = L.convergence(flat)
    assert (c.lag, c.window) == (6, 2) and c.gain.mean == pytest.approx(0.0, abs=1e-12)
    assert c.verdict == "holds" and "converged" in str(c)
    rising = _rep([[0.01 * e for e in range(24)], [0.01 * e + 0.005 for e in range(24)],
                   [0.011 * e for e in range(24)]])
    assert L.convergence(rising).gain.mean == pytest.approx(0.062, abs=0.002)  # 6 epochs × ~0.01
    assert L.convergence(rising).verdict == "does not hold"
    noisy = _rep([[0.5] * 20 + [0.5, 0.5, 0.5, 0.5], [0.5] * 20 + [0.55, 0.55, 0.55, 0.55],
                  [0.5] * 20 + [0.48, 0.48, 0.48, 0.48]])
    assert L.convergence(noisy).verdict == "inconclusive"  # mean gain 0.01, interval reaching past 0.02
    unfit = _rep([[0.3] * 8 + [0.6] * 16] * 2 + [[0.3] * 8 + [0.61] * 16], train_acc=0.9)
    assert L.convergence(unfit).verdict == "does not hold"  # flat, but the training set is not fit


def test_paired_differences_and_the_runs_table():
    base = _rep([[0.60], [0.62], [0.58]])
    other = _rep([[0.59], [0.61], [0.57]], label="bf16 pure")
    runs = L.PrecisionRuns({"fp32 pure": base, "bf16 pure": other}, None, 1)
    d = runs.paired("bf16 pure")
    assert d.mean == pytest.approx(-0.01) and d.half_width == pytest.approx(0.0, abs=1e-9)  # same gap every seed
    table = L.runs_table(runs)
    assert "3 seeds per recipe" in table and "-0.010 ± 0.000" in table and "0.600 ± 0.050" in table


# --- spreads: the F interval, the chaos comparison -----------------------------------------------------------
def test_sd_ratio_interval_matches_the_f_distribution():
    a = [0.0, 1.0, 2.0, 3.0, 4.0]  # variance 2.5
    b = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # variance 14
    iv = H.sd_ratio_interval(a, b)
    r2 = 2.5 / 14
    assert iv.mean == pytest.approx(math.sqrt(r2))
    assert iv.low == pytest.approx(math.sqrt(r2 / f_dist.ppf(0.975, 4, 5)))
    assert iv.high == pytest.approx(math.sqrt(r2 / f_dist.ppf(0.025, 4, 5)))
    same = H.sd_ratio_interval(a, a)
    assert same.mean == 1.0 and same.low < 1.0 < same.high
    with pytest.raises(ValueError, match="at least 2"):
        H.sd_ratio_interval([1.0], a)


def test_chaos_comparison_on_values():
    seeds = _rep([[0.60], [0.62], [0.58], [0.61]], distance=[[0.0, 0.0], [1.4, 1.4], [1.4, 1.4], [1.4, 1.4]],
                 disagreement=[[0.0, 0.0], [0.9, 0.3], [0.9, 0.3], [0.9, 0.3]])
    bits = _rep([[0.605], [0.606], [0.604], [0.60]], distance=[[1e-9, 1e-2], [2e-9, 2e-2], [1e-9, 0.0], [1e-9, 1e-1]],
                disagreement=[[0.0, 0.05]] * 4)
    ch = H.ChaosResult(seeds, bits, bit_pairs=[0.05, 0.03], seed_pairs=[0.25, 0.30])
    assert ch.absorbed == 1  # the third run rounded its flipped bit away
    assert ch.growth.n == 3 and ch.growth.mean == pytest.approx((7 + 7 + 8) / 3)
    assert ch.final_distance.mean == pytest.approx((1e-2 + 2e-2 + 1e-1) / 3)
    assert ch.disagreement_ratio.mean == pytest.approx((0.05 / 0.25 + 0.03 / 0.30) / 2)
    assert ch.distance_seeds.shape == (3, 2)  # the reference run itself is left out
    assert ch.sd_ratio.mean == pytest.approx(ch.bit_sd / ch.seed_sd)
    with pytest.raises(ValueError, match="tracked"):
        H.chaos(_rep([[0.6]] * 4), bits, load("mnist1d"))


def test_chaos_late_change_tells_a_plateau_from_growth():
    """The control: one-bit disagreement over the last twelfth of the epochs minus a quarter earlier, run by run."""
    seeds = _rep([[0.60], [0.62], [0.58], [0.61]], distance=[[0.0] * 13] * 4, disagreement=[[0.0] * 13] * 4)
    flat = [[0.0] + [0.01 * min(e, 6) for e in range(1, 13)] for _ in range(3)]  # grows, then stays at 0.06
    flat.append([0.0] + [0.012 * min(e, 6) for e in range(1, 13)])
    ch = H.ChaosResult(seeds, _rep([[0.6]] * 4, distance=[[1e-9] * 13] * 4, disagreement=flat), [0.05], [0.3])
    assert ch.late_change.n == 4 and ch.late_change.mean == pytest.approx(0.0)  # 12 epochs: window 1, lag 3
    rising = [[0.01 * e for e in range(13)], [0.011 * e for e in range(13)], [0.009 * e for e in range(13)],
              [0.012 * e for e in range(13)]]
    ch = H.ChaosResult(seeds, _rep([[0.6]] * 4, distance=[[1e-9] * 13] * 4, disagreement=rising), [0.05], [0.3])
    assert ch.late_change.mean == pytest.approx(3 * (0.01 + 0.011 + 0.009 + 0.012) / 4)  # epoch 12 minus epoch 9
    assert ch.late_change.low > 0


def test_sr_result_shares_are_paired_by_seed():
    def losses(vals):
        rep = _rep([[0.5]] * len(vals))
        for h, v in zip(rep.histories, vals):
            h.train_loss[-1] = v
        return rep

    start = math.log(10)
    sr = H.SRResult(losses([start - 1.0, start - 0.5]), losses([start - 0.2, start - 0.1]),
                    losses([start - 1.0, start - 0.45]))
    assert sr.shares("nearest") == pytest.approx([0.2, 0.2]) and sr.interval("nearest").half_width < 1e-9
    assert sr.shares("stochastic") == pytest.approx([1.0, 0.9])
