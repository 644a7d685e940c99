"""Lesson 07 (precision): formats, rounding, lost updates, loss scaling, the experiments, and the clear errors.
The checks of the learner's code are tested in test_precision_checks.py."""

import math

import pytest
import torch

from lessons_lib.data import load
from lessons_lib.device import DeviceUnavailableError
from lessons_lib.history import History
from lessons_lib.precision import formats as F
from lessons_lib.precision import hypotheses as H
from lessons_lib.precision import lab as L
from lessons_lib.precision import plots
from lessons_lib.precision import reference as R
from lessons_lib.precision import replicates as RP

BF16 = torch.bfloat16


# --- names, formats, bad input -------------------------------------------------------------------
def test_dtype_names_and_sizes():
    assert [F.bytes_per_param(n) for n in F.DTYPES] == [8, 4, 2, 2]
    assert F.dtype_name(torch.bfloat16) == "bf16" and F.dtype_name("half") == "fp16"
    assert F.spacing_at_one("bf16") == 2.0**-7 and F.spacing_at_one("fp16") == 2.0**-10
    assert [R.fraction_bits(F.to_dtype(n)) for n in F.DTYPES] == [52, 23, 7, 10]


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match="fp64, fp32, bf16, fp16"):
        F.dtype_name("fp8")
    with pytest.raises(ValueError, match="float types"):
        F.dtype_name(torch.int8)


def test_unsupported_dtype_on_device_says_what_is_supported():
    with pytest.raises(F.UnsupportedDtypeError, match=r"Supported there in mode 'autocast': bf16, fp16"):
        F.require_dtype("fp64", "cpu", mode="autocast")
    with pytest.raises((F.UnsupportedDtypeError, DeviceUnavailableError), match="MPS has no float64|No GPU is visible"):
        F.require_dtype("fp64", "mps")  # no MPS here: the course's message on how to get a GPU
    with pytest.raises(F.UnsupportedDtypeError, match="16-bit"):
        L.train_precision(dtype="fp32", mode="stored", epochs=1)  # raised before any training
    with pytest.raises(ValueError, match="mode='stored'"):
        L.train_precision(dtype="bf16", mode="pure", rounding="stochastic", epochs=1)
    assert F.supported_dtypes("cpu") == ["fp64", "fp32", "bf16", "fp16"]


def _lost(w: float, u: float, dtype: torch.dtype) -> int:
    return R.count_lost_updates(torch.tensor([w], dtype=dtype), torch.tensor([u]), dtype)


def test_count_lost_updates_round_to_nearest_even():
    assert _lost(1.0, 0.003, BF16) == 1  # below half the gap 2^-8
    assert _lost(1.0, 0.003, torch.float32) == 0
    assert _lost(1.0, 2.0**-8, BF16) == 1  # a tie: rounds to the even neighbour, 1.0
    assert _lost(1.0 + 2**-7, 2.0**-8, BF16) == 0  # a tie again, but the even neighbour is the next one
    assert _lost(1.0, -0.003, BF16) == 0  # below a power of two the gap is half as large
    assert _lost(1.0, 2.0**-7, BF16) == 0
    assert _lost(1.0, 0.0, BF16) == 0  # no update, nothing lost
    w = torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=BF16)
    u = torch.tensor([0.001, 0.0, 0.001, 0.1])
    assert R.count_lost_updates(w, u, BF16) == 2 and R.lost_share(w, u, BF16) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same shape"):
        R.count_lost_updates(w, u[:2], BF16)


# --- rounding from scratch -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_neighbours_bracket_and_match_the_format(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, generator=g) * torch.logspace(-9, 3, 5000)
    dt = F.DTYPES[dtype]
    lo, hi = R.neighbours(x, dt)
    assert torch.all(lo <= x) and torch.all(x < hi)
    assert torch.equal(lo.to(dt).float(), lo) and torch.equal(hi.to(dt).float(), hi)  # both representable
    nearest = x.to(dt).float()
    assert torch.all((nearest == lo) | (nearest == hi))  # the cast picks one of the two


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_stochastic_rounding_is_unbiased(seed, dtype):
    vals = (1.001, 0.1 + 1e-4, -2.7182818, 3e-6) if dtype == "fp16" else (1.001, 1.003, 0.1 + 1e-4, -2.7182818)
    res = H.measure_unbiased(vals, dtype=dtype, draws=20000, seed=seed)
    assert res.z < 4.5  # mean within 4.5 standard errors of the value
    assert res.nearest_error > 1e-4  # while round-to-nearest is off by a fixed amount


def test_stochastic_round_only_picks_neighbours_and_keeps_exact_values():
    g = torch.Generator().manual_seed(3)
    x = torch.tensor([1.0, 0.5, 1.001, -3.3, 0.0])
    lo, hi = R.neighbours(x, BF16)
    for _ in range(20):
        r = R.stochastic_round(x, BF16, generator=g).float()
        assert torch.all((r == lo) | (r == hi))
    assert R.stochastic_round(x, BF16, generator=g)[:2].tolist() == [1.0, 0.5]
    assert R.stochastic_round(torch.tensor([math.inf]), torch.float16).item() == math.inf
    assert R.stochastic_round_bf16(x, g).dtype == BF16
    with pytest.raises(ValueError, match="float32/float64"):
        R.stochastic_round(torch.ones(2, dtype=torch.bfloat16), BF16)


def test_flip_bit_changes_one_weight_by_one_ulp_and_is_reversible():
    m = torch.nn.Linear(10, 10)
    w0, b0 = m.weight.detach().clone(), m.bias.detach().clone()
    RP.flip_bit_(m, 37)  # weight[3, 7]
    changed = (m.weight != w0).nonzero().tolist()
    assert changed == [[3, 7]] and torch.equal(m.bias, b0)
    old = w0[3, 7]
    up, down = (torch.nextafter(old, torch.tensor(v)) for v in (math.inf, -math.inf))
    assert m.weight[3, 7] in (up, down)  # a neighbouring float32
    RP.flip_bit_(m, 37)
    assert torch.equal(m.weight, w0)
    RP.flip_bit_(m, 100 + 2)  # past the 100 weights: bias[2]
    assert (m.bias != b0).nonzero().tolist() == [[2]]
    with pytest.raises(ValueError, match=r"index=110: .*0 to 109"):
        RP.flip_bit_(m, 110)
    with pytest.raises(ValueError, match="float32"):
        RP.flip_bit_(torch.nn.Linear(2, 2).double(), 0)


# --- speed table ---------------------------------------------------------------------------------
def test_dtype_table_rows():
    t = F.dtype_table(["cpu"], n=128, repeats=3)
    assert [r.dtype for r in t.rows] == list(F.DTYPES)
    assert all(r.gflops > 0 for r in t.rows)
    ref = t.get("cpu", "fp32")
    assert (ref.vs_fp32.median, ref.vs_fp32.low, ref.vs_fp32.high, ref.vs_fp32.n) == (1.0, 1.0, 1.0, 3)
    assert ref.verdict == "reference"
    r64 = t.get("cpu", "fp64").vs_fp32
    assert r64.low <= r64.median <= r64.high and t.ratio("cpu", "fp64", "fp32").median == r64.median
    assert "hardware units" in str(t) and "median (range)" in str(t) and "<table>" in t._repr_html_()
    assert len(t.timings["cpu"]["bf16"].times) == 3


# --- training in each precision ------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return load("mnist1d", seed=0)


def test_lost_updates_by_dtype(data):
    kw = dict(data=data, epochs=2, width=64, seed=0)
    r32 = L.train_precision(dtype="fp32", **kw)
    r16 = L.train_precision(dtype="bf16", **kw)
    ra = L.train_precision(dtype="bf16", mode="autocast", **kw)
    assert r32.lost_share < 0.01 and ra.lost_share < 0.01  # fp32 weights keep their updates
    assert r16.lost_share > 0.1  # bf16 weights lose many
    assert set(r16.lost_by_layer) == set(ra.lost_by_layer) == {"0.weight", "0.bias", "2.weight", "2.bias",
                                                                  "4.weight", "4.bias"}
    assert r16.state_bytes == r32.state_bytes // 2  # weights, grads, momentum: 2 bytes instead of 4
    assert ra.model(data.x_val[:4]).dtype == torch.float32
    assert ra.val_acc > 0.2  # it learns


@pytest.mark.parametrize("seeds", [[0, 1, 2], [3, 4, 5]])
def test_stochastic_rounding_rescues_a_stalled_run(seeds, data, one_thread):
    sr = H.sr_recovery(data, seeds, epochs=4, width=64)
    assert sr.lost_interval("nearest").low > 0.5
    assert sr.interval("nearest").high < 0.6  # round-to-nearest gets a fraction of fp32's progress, every seed
    assert sr.interval("stochastic").low > 0.85  # stochastic rounding gets (nearly) all of it
    assert len(sr.shares("nearest")) == 3 and sr.shares("fp32") == [1.0, 1.0, 1.0]


def test_fp16_adam_collapses_because_eps_underflows(data):
    assert torch.tensor(1e-8, dtype=torch.float16).item() == 0.0
    r = L.train_precision(dtype="fp16", optimizer="adam", lr=1e-3, epochs=1, data=data, width=32, seed=0)
    assert math.isnan(r.history.val_loss[-1])


def test_fp16_backward_underflows_without_loss_scaling(data, one_thread):
    nets = RP.train_replicates(data, [0, 1, 2], epochs=4, measure_lost=False).models
    u = H.gradient_underflow(nets, data)
    assert u.scales == [1.0, 1024.0, 65536.0] and len(u.by_scale[1.0]) == 3
    assert min(u.by_scale[1.0]) > 0.001
    assert all(s < 0.5 * b for s, b in zip(u.by_scale[1024.0], u.by_scale[1.0]))
    assert u.reduction(1024.0).low > 0 and u.interval(1.0).n == 3
    assert u.by_layer[1.0]["4"] > u.by_layer[1.0]["0"]  # the output layer's signal is the smallest
    one = H.gradient_underflow(nets[0], data)  # a single network works too
    assert one.by_scale[1.0] == [u.by_scale[1.0][0]]
    with pytest.raises(ValueError, match="start with 1.0"):
        H.gradient_underflow(nets[0], data, scales=(1024.0,))


def test_loss_scaler_matches_torch_grad_scaler():
    """Same batches, same model, fp16 autocast: our scaler and torch.amp.GradScaler make the same steps."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    xs = [torch.randn(8, 20) for _ in range(6)]
    ys = [torch.randint(0, 4, (8,)) for _ in range(6)]
    kw = dict(init_scale=2.0**30, growth=2.0, backoff=0.5, interval=2)  # 2^30 overflows fp16: a skip first

    ours = L.PrecisionModel(copy_of(base), torch.float16)
    opt1 = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    scaling = L.LossScaling(R.LossScaler(**kw))
    scaler = scaling.scaler
    ours.scaler = scaler
    handle = opt1.register_step_pre_hook(scaling.pre_step)
    for x, y in zip(xs, ys):
        opt1.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(ours(x), y).backward()
        opt1.step()
    handle.remove()

    theirs = copy_of(base)
    opt2 = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    gs = torch.amp.GradScaler("cpu", init_scale=kw["init_scale"], growth_factor=2.0, backoff_factor=0.5,
                              growth_interval=2)
    torch_scales = []
    for x, y in zip(xs, ys):
        opt2.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            out = theirs(x)
        gs.scale(torch.nn.functional.cross_entropy(out.float(), y)).backward()
        torch_scales.append(gs.get_scale())
        gs.step(opt2)
        gs.update()
    assert scaler.scales == torch_scales
    assert scaler.skipped >= 1 and scaler.scale == gs.get_scale()
    for a, b in zip(ours.inner.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loss_scaler_inside_fit(data):
    r = L.train_precision(dtype="fp16", mode="autocast", loss_scaling=True, epochs=2, width=64, data=data, seed=0)
    assert r.loss_scale_skipped is not None and r.val_acc > 0.2


def copy_of(m):
    import copy

    return copy.deepcopy(m)


# --- the survey with a lost-update counter, stochastic rounding passed in, chaos, claims, figures -------------
def test_lost_update_survey_counts_one_step_with_the_given_counter(data):
    nets = RP.train_replicates(data, [0, 1], epochs=2, width=32, measure_lost=False).models
    calls = []

    def counter(w, u, dtype):
        calls.append(dtype)
        return R.count_lost_updates(w, u, dtype)

    s = H.lost_update_survey(nets, data, count=counter)
    assert s.settings == ["sgd lr 0.05", "adam lr 0.0001"] and s.dtypes == ["fp32", "bf16", "fp16"]
    assert len(calls) == 2 * 2 * 3 * 6 and s.layers[0] == "0.weight" and s.runs == 2
    assert s.share("adam lr 0.0001", "fp32") < 0.01 < 0.5 < s.share("adam lr 0.0001", "bf16")
    row = s.row("adam lr 0.0001", "bf16", "4.bias")
    assert row.median_u == pytest.approx(1e-4, rel=1e-3)  # Adam's first step: about lr for every weight
    assert row.tried == 2 * 10  # pooled over the two networks
    each = s.run_shares("adam lr 0.0001", "bf16")
    assert len(each) == 2 and s.interval("adam lr 0.0001", "bf16").mean == pytest.approx(sum(each) / 2)
    one = H.lost_update_survey(nets[0], data)  # a single network works too
    assert one.runs == 1 and one.share("adam lr 0.0001", "bf16") == pytest.approx(each[0])
    assert "median|u|" in str(s) and "over the 2 networks" in str(s)
    with pytest.raises(ValueError, match="no survey row"):
        s.share("sgd lr 1", "bf16")


def test_stochastic_rounding_function_is_passed_through(data):
    calls = []

    def mine(x, generator):
        calls.append(x.dtype)
        return R.stochastic_round_bf16(x, generator)

    sr = H.sr_recovery(data, [0, 1], epochs=1, width=32, stochastic=mine)
    steps = sr.stochastic.histories[0].steps
    assert len(calls) == 6 * (steps + 1) and set(calls) == {torch.float32}  # 6 tensors, at start and every step
    u = H.measure_unbiased(draws=500, stochastic=mine)
    assert len(u.mean) == 4 and u.draws == 500


def test_experiment_is_the_panels(data):
    h = L.experiment(device="cpu", callbacks=[], dtype="bf16", mode="stored", rounding="stochastic", epochs=1,
                     width=32)
    assert isinstance(h, History) and h.config["rounding"] == "stochastic"


def test_claims_chaos_and_figures(data, one_thread):
    import matplotlib

    matplotlib.use("Agg")
    runs = L.compare_precisions(data, [0, 1, 2, 3], epochs=2, width=32, bit_flips=4)
    assert runs.labels == ["fp64 pure", "fp32 pure", "bf16 pure", "fp16 pure", "autocast bf16"]  # fp16 autocast: GPU
    table = F.dtype_table(["cpu"], n=128, repeats=2)
    timing = L.epoch_timing(data, rounds=2, width=32)
    sr = H.sr_recovery(data, [0, 1], epochs=1, width=32)
    nets = runs["fp32 pure"].models
    chaos = H.chaos(runs["fp32 pure"], runs.bit_flipped, data)
    c = L.claims(table, timing, runs, L.convergence(runs["fp32 pure"]), H.lost_update_survey(nets, data),
                 H.measure_unbiased(draws=2000), sr, H.gradient_underflow(nets, data), chaos)
    assert len(c.rows) == 10
    assert all(r.verdict in ("holds", "does not hold", "inconclusive", "not measurable") for r in c.rows)
    assert "counted" in str(c) and "Summers & Dinneen 2021" in str(c) and "Control" in str(c)
    assert c.rows[0].verdict == "does not hold" or "range" in c.rows[0].measured
    for fig in (plots.dtype_speed(table), plots.runs(runs, L.convergence(runs["fp32 pure"])), plots.sr_rescue(sr),
                plots.chaos(chaos)):
        assert fig.axes


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device kind 'tpu'"):
        F.require_dtype("fp32", "tpu")
