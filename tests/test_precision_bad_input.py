"""Lesson 07: bad input at the public boundary the notebook uses (formats, rounding, replicates, hypotheses, checks)
gets a clear error naming the argument and the fix, never a raw torch/numpy error and never a silent wrong result;
numpy scalars are numbers, bools are not; a missing GPU is the course's DeviceUnavailableError. Plus property tests
(Hypothesis) of the rounding functions against torch's own casts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib.data import load
from lessons_lib.device import DeviceUnavailableError
from lessons_lib.precision import checks as C
from lessons_lib.precision import formats as F
from lessons_lib.precision import hypotheses as H
from lessons_lib.precision import lab as L
from lessons_lib.precision import reference as R
from lessons_lib.precision import replicates as RP
from lessons_lib.validate import BadArgument

BF16 = torch.bfloat16
NO_GPU = not torch.cuda.is_available() and not torch.backends.mps.is_available()
FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def tiny():
    return load("mnist1d").subset_train(192)


@pytest.fixture(scope="module")
def nets(tiny):
    return RP.train_replicates(tiny, [1, 2, 3], epochs=3, width=8)


# --- reference: tensors and torch dtypes, refused clearly -----------------------------------------------------
W, U = torch.tensor([1.0, 2.0], dtype=BF16), torch.tensor([1e-3, 1e-3])


@pytest.mark.parametrize("call, match", [
    (lambda: R.count_lost_updates([1.0], [1e-3], BF16), "w: must be a floating-point torch tensor, got list"),
    (lambda: R.count_lost_updates(W, U, "bf16"), r"dtype='bf16': must be a torch float dtype.*to_dtype"),
    (lambda: R.count_lost_updates(W, U, torch.int64), "dtype=torch.int64: must be a torch float dtype"),
    (lambda: R.count_lost_updates(torch.tensor([1, 2]), U, BF16), "w: .*got a torch.int64 tensor"),
    (lambda: R.count_lost_updates(W, torch.tensor([NAN, 0.0]), BF16), "u: an update is inf or NaN"),
    (lambda: R.count_lost_updates(W, torch.tensor([INF, 0.0]), BF16), "u: an update is inf or NaN"),
    (lambda: R.count_lost_updates(W, U[:1], BF16), "same shape"),
    (lambda: R.lost_share([1.0], [1e-3], BF16), "w: must be a floating-point torch tensor"),
    (lambda: R.fraction_bits("bf16"), "dtype='bf16': must be a torch float dtype"),
    (lambda: R.fraction_bits(torch.int32), "dtype=torch.int32"),
    (lambda: R.neighbours([1.0], BF16), "x: must be a floating-point torch tensor, got list"),
    (lambda: R.neighbours(torch.tensor([1, 2]), BF16), "x: .*torch.int64 tensor"),
    (lambda: R.neighbours(torch.ones(1), torch.int32), "dtype=torch.int32"),
    (lambda: R.round_nearest(torch.ones(1), "bf16"), "dtype='bf16'"),
    (lambda: R.round_nearest([1.0], BF16), "x: must be a floating-point torch tensor"),
    (lambda: R.stochastic_round([1.0], BF16), "x: stochastic_round rounds float32/float64 tensors, got list"),
    (lambda: R.stochastic_round(torch.ones(1), "bf16"), "dtype='bf16'"),
    (lambda: R.stochastic_round(torch.ones(1), BF16, 5), r"generator=5: must be a torch.Generator"),
    (lambda: R.LossScaler(init_scale=True), "init_scale=True: .*got bool"),
    (lambda: R.LossScaler(init_scale=NAN), "init_scale=nan"),
    (lambda: R.LossScaler(init_scale=INF), "init_scale=inf"),
    (lambda: R.LossScaler(init_scale=0), "init_scale=0"),
    (lambda: R.LossScaler(growth=1.0), "growth=1.0"),
    (lambda: R.LossScaler(backoff=1.5), "backoff=1.5"),
    (lambda: R.LossScaler(interval=2.5), "interval=2.5: .*not rounded"),
    (lambda: R.LossScaler(interval="3"), "interval='3'"),
    (lambda: R.LossScaler().unscale_and_check(torch.ones(3)), "grads: must be a list of gradient tensors"),
])
def test_reference_refuses_bad_input_clearly(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


def test_reference_takes_numpy_scalars_and_non_finite_values():
    s = R.LossScaler(np.float32(1024), interval=np.int64(5))
    assert s.scale == 1024.0 and s.interval == 5 and isinstance(s.interval, int)
    assert s.unscale_and_check([torch.ones(2), None]) is False  # None gradients (frozen parameters) are skipped
    lo, hi = R.neighbours(torch.tensor([NAN, INF, -INF]), BF16)  # no neighbours: lo = hi = x
    assert torch.isnan(lo[0]) and torch.equal(lo[1:], hi[1:]) and lo[1] == INF


# --- formats: names, modes, devices, sizes ---------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: F.dtype_name(None), "dtype=None: unknown dtype"),
    (lambda: F.dtype_name(True), "dtype=True: unknown dtype"),
    (lambda: F.dtype_name(16), "dtype=16"),
    (lambda: F.dtype_name("fp8"), "unknown dtype 'fp8': use one of fp64, fp32, bf16, fp16"),
    (lambda: F.to_dtype(np.float16), "unknown dtype"),
    (lambda: F.require_dtype("bf16", "cpu", "mixed"), r"mode='mixed': must be one of 'pure', 'autocast', 'stored'"),
    (lambda: F.require_dtype("bf16", "cpu", None), "mode=None"),
    (lambda: F.require_dtype("bf16", 0), "device=0: use 'cpu'"),
    (lambda: F.supported_dtypes("cpu", "x"), "mode='x'"),
    (lambda: F.matmul_gflops("fp32", n=True), "n=True"),
    (lambda: F.matmul_gflops("fp32", n=0), "n=0"),
    (lambda: F.matmul_gflops("fp32", n=8.5), "n=8.5"),
    (lambda: F.matmul_gflops("fp32", n=8, repeats=0), "repeats=0"),
    (lambda: F.matmul_gflops("fp32", n=8, threads=0), "threads=0"),
    (lambda: F.matmul_gflops("fp32", n=8, threads=True), "threads=True"),
    (lambda: F.matmul_timings("fp32", n=8), "names='fp32': must be a list"),
    (lambda: F.dtype_table(n=0), "n=0"),
    (lambda: F.dtype_table(n=8, repeats=1), "repeats=1: .*a range needs 2"),
    (lambda: F.dtype_table(devices="cpu", n=8), r"devices='cpu': must be a list"),
    (lambda: F.dtype_table(n=8, threads=1.5), "threads=1.5"),
])
def test_formats_refuse_bad_input_clearly(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


def test_table_lookup_names_the_rows():
    table = F.dtype_table(["cpu"], n=16, repeats=2)
    assert table.get("cpu", torch.bfloat16).dtype == "bf16"  # a torch dtype is a name too
    with pytest.raises(BadArgument, match="unknown dtype 'fp8'"):
        table.get("cpu", "fp8")
    with pytest.raises(BadArgument, match="no row for bf16.*its devices: cpu"):
        table.get("cuda", "bf16")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("call", [
    lambda: F.require_dtype("bf16", "cuda"),
    lambda: F.require_dtype("bf16", "gpu"),
    lambda: F.supported_dtypes("cuda"),
    lambda: F.native_units("bf16", "cuda"),
    lambda: F.matmul_gflops("fp32", device="cuda", n=8),
    lambda: F.dtype_table(devices=["cuda"], n=8),
    lambda: L.train_precision(device="gpu", epochs=1, width=8),
    lambda: L.experiment(device="gpu", epochs=1, width=8),
    lambda: RP.train_replicates(load("mnist1d"), [1, 2], device="cuda", epochs=1, width=8),
    lambda: L.epoch_timing(load("mnist1d"), [("fp32", "pure")], device="cuda"),
    lambda: H.sr_recovery(load("mnist1d"), [1, 2], device="cuda", epochs=1, width=8),
])
def test_a_missing_gpu_is_the_courses_message(call):
    with pytest.raises(DeviceUnavailableError, match="No GPU is visible.*device='cpu'"):
        call()


# --- training and replicates ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(seeds=5), "seeds=5: must be a list of seeds"),
    (dict(seeds="12"), "seeds='12'"),
    (dict(seeds=[True, 2]), r"seeds\[0\]=True"),
    (dict(seeds=[1.5, 2]), r"seeds\[0\]=1.5"),
    (dict(seeds=[-1, 2]), r"seeds\[0\]=-1"),
    (dict(seeds=[]), "at least 1 seed"),
    (dict(epochs=0), "epochs=0"),
    (dict(epochs=2.5), "epochs=2.5"),
    (dict(width=0), "width=0"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=True), "batch_size=True"),
    (dict(lr=NAN), "lr=nan"),
    (dict(lr=-0.1), "lr=-0.1"),
    (dict(lost_every=True), "lost_every=True"),
    (dict(lost_every=2.5), "lost_every=2.5"),
    (dict(flips=[None, 2.5]), r"flips\[1\]=2.5"),
    (dict(flips=[None, True]), r"flips\[1\]=True"),
    (dict(flips=[-1, None]), r"flips\[0\]=-1"),
    (dict(flips=[None, 10**9]), r"index=1000000000: .*0 to"),
    (dict(flips="ab"), "flips='ab'"),
    (dict(rounding="up"), "rounding must be one of nearest, stochastic"),
    (dict(dtype="fp8"), "unknown dtype 'fp8'"),
    (dict(mode="mixed"), "mode='mixed'"),
    (dict(threads=0), "threads=0"),
    (dict(dtype="bf16", mode="stored", rounding="stochastic", stochastic=5), "stochastic=5: must be a function"),
    (dict(dtype="bf16", mode="stored", rounding="stochastic", stochastic=lambda x, g: x),
     "must return a torch.bfloat16 tensor.*got a torch.float32 tensor"),
    (dict(dtype="bf16", mode="stored", rounding="stochastic", stochastic=lambda x, g: None), "got NoneType"),
])
def test_train_replicates_refuses_bad_input_clearly(tiny, kw, match):
    args = dict(seeds=[1, 2], epochs=1, width=8) | kw
    with pytest.raises(BadArgument, match=match):
        RP.train_replicates(tiny, **args)


def test_train_replicates_takes_numpy_numbers(tiny):
    rep = RP.train_replicates(tiny, np.array([1, 2]), epochs=np.int64(1), width=np.int64(8), lr=np.float32(0.05),
                              flips=[None, np.int64(3)])
    assert rep.seeds == [1, 2] and rep.flips == [None, 3] and all(type(s) is int for s in rep.seeds)
    with pytest.raises(BadArgument, match="data: must be a Splits"):
        RP.train_replicates(None, [1, 2], epochs=1)
    with pytest.raises(BadArgument, match="metric='val_accuracy'"):
        rep.final("val_accuracy")
    with pytest.raises(BadArgument, match="layer='9.weight'"):
        rep.lost_interval("9.weight")


@pytest.mark.parametrize("kw, match", [
    (dict(data="mnist1d"), "data: must be a Splits"),
    (dict(width=True), "width=True"),
    (dict(depth=-1), "depth=-1"),
    (dict(threads=True), "threads=True"),
    (dict(dtype="bf16", mode="stored", rounding="stochastic", stochastic=lambda x, g: x.to(torch.float16)),
     "must return a torch.bfloat16 tensor"),
])
def test_train_precision_refuses_bad_input_clearly(tiny, kw, match):
    args = dict(data=tiny, epochs=1, width=8) | kw
    with pytest.raises(BadArgument, match=match):
        L.train_precision(**args)


def test_comparison_and_controls_refuse_bad_input(tiny, nets):
    with pytest.raises(BadArgument, match="seeds=3"):
        L.compare_precisions(tiny, 3, epochs=1, width=8)
    with pytest.raises(BadArgument, match="bit_flips=-1"):
        L.compare_precisions(tiny, [1, 2], epochs=1, width=8, bit_flips=-1)
    with pytest.raises(BadArgument, match="bit_flips=True"):
        L.compare_precisions(tiny, [1, 2], epochs=1, width=8, bit_flips=True)
    with pytest.raises(BadArgument, match="recipes=.*pairs"):
        L.compare_precisions(tiny, [1, 2], ["fp32"], epochs=1, width=8)
    with pytest.raises(BadArgument, match="rounds=0"):
        L.epoch_timing(tiny, [("fp32", "pure")], rounds=0, width=8)
    with pytest.raises(BadArgument, match="rounds=True"):
        L.epoch_timing(tiny, [("fp32", "pure")], rounds=True, width=8)
    for tol in (NAN, True, -1, 0):
        with pytest.raises(BadArgument, match="tolerance="):
            L.convergence(nets, tolerance=tol)
    with pytest.raises(BadArgument, match="rep: must be the Replicates"):
        L.convergence([0.5, 0.6])
    with pytest.raises(BadArgument, match="at least 2 seeds"):
        L.convergence(nets.select([0]))


# --- hypotheses ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda d, m: H.lost_update_survey("x", d), "models: must be a trained network"),
    (lambda d, m: H.lost_update_survey([], d), "non-empty list"),
    (lambda d, m: H.lost_update_survey(m, "mnist1d"), "data: must be a Splits"),
    (lambda d, m: H.lost_update_survey(m, d, count=5), r"count=5: must be a function \(w, u, dtype\) -> int"),
    (lambda d, m: H.lost_update_survey(m, d, count=lambda w, u, t: None), "count: .*got None"),
    (lambda d, m: H.lost_update_survey(m, d, count=lambda w, u, t: 0.5), "count: .*got 0.5"),
    (lambda d, m: H.lost_update_survey(m, d, count=lambda w, u, t: -1), "count: .*got -1"),
    (lambda d, m: H.lost_update_survey(m, d, count=lambda w, u, t: True), "count: .*got True"),
    (lambda d, m: H.lost_update_survey(m, d, dtypes=["fp8"]), "unknown dtype 'fp8'"),
    (lambda d, m: H.lost_update_survey(m, d, settings=[("sgd", NAN)]), "lr=nan"),
    (lambda d, m: H.lost_update_survey(m, d, settings=("sgd", 0.1)), "settings=.*pairs"),
    (lambda d, m: H.lost_update_survey(m, d, n=0), "n=0"),
    (lambda d, m: H.lost_update_survey(m, d, n=True), "n=True"),
    (lambda d, m: H.lost_update_survey(torch.nn.Sequential(torch.nn.Linear(20, 10)), d), "n_in=40"),
    (lambda d, m: H.measure_unbiased(dtype="fp8", draws=10), "unknown dtype 'fp8'"),
    (lambda d, m: H.measure_unbiased(dtype="fp32", draws=10), "dtype='fp32': must be one of 'bf16', 'fp16'"),
    (lambda d, m: H.measure_unbiased(draws=0), "draws=0"),
    (lambda d, m: H.measure_unbiased(draws=1), "draws=1"),
    (lambda d, m: H.measure_unbiased(draws=True), "draws=True"),
    (lambda d, m: H.measure_unbiased(draws=10.5), "draws=10.5"),
    (lambda d, m: H.measure_unbiased(values=[], draws=10), "values: give at least one value"),
    (lambda d, m: H.measure_unbiased(values=[NAN], draws=10), r"values\[0\]=nan"),
    (lambda d, m: H.measure_unbiased(values=[INF], draws=10), r"values\[0\]=inf"),
    (lambda d, m: H.measure_unbiased(stochastic=5, draws=10), "stochastic=5: must be a function"),
    (lambda d, m: H.measure_unbiased(stochastic=lambda x, g: None, draws=10), "got NoneType"),
    (lambda d, m: H.measure_unbiased(stochastic=lambda x, g: x[:1].to(BF16), draws=10), "input's shape"),
    (lambda d, m: H.measure_unbiased(seed=True, draws=10), "seed=True"),
    (lambda d, m: H.sr_recovery(d, [1], epochs=1, width=8), "at least 2 seed"),
    (lambda d, m: H.sr_recovery(d, [1, 2], dtype="fp32", epochs=1, width=8), "dtype='fp32'"),
    (lambda d, m: H.sr_recovery(d, [1, 2], stochastic=5, epochs=1, width=8), "stochastic=5"),
    (lambda d, m: H.sr_recovery(d, [1, 2], stochastic=lambda x, g: x, epochs=1, width=8), "bfloat16 tensor"),
    (lambda d, m: H.gradient_underflow("x", d), "models: must be"),
    (lambda d, m: H.gradient_underflow([], d), "non-empty list"),
    (lambda d, m: H.gradient_underflow(m, d, scales=()), "scales=()"),
    (lambda d, m: H.gradient_underflow(m, d, scales=(2.0,)), "must start with 1.0"),
    (lambda d, m: H.gradient_underflow(m, d, scales=(1.0, NAN)), r"scales\[1\]=nan"),
    (lambda d, m: H.gradient_underflow(m, d, scales=(1.0, -4.0)), r"scales\[1\]=-4.0"),
    (lambda d, m: H.gradient_underflow(m, d, scales=(True, 2.0)), r"scales\[0\]=True"),
    (lambda d, m: H.gradient_underflow(m, d, n=0), "n=0"),
    (lambda d, m: H.chaos("a", "b", d), "chaos needs the fp32 runs"),
    (lambda d, m: H.sd_ratio_interval([NAN, 1], [1, 2]), r"a\[0\]=nan"),
    (lambda d, m: H.sd_ratio_interval([1, 2], [1, 1]), "no spread"),
    (lambda d, m: H.sd_ratio_interval([1], [1, 2]), "at least 2 values"),
])
def test_hypotheses_refuse_bad_input_clearly(tiny, nets, call, match):
    with pytest.raises(ValueError, match=match):  # BadArgument, or the core's check_model_fits_data (a ValueError)
        call(tiny, nets.models)


def test_survey_lookups_name_what_exists(tiny, nets):
    survey = H.lost_update_survey(nets.models, tiny, count=lambda w, u, t: torch.tensor(0))  # a 0-dim count is a count
    assert survey.share("sgd lr 0.05", "bf16") == 0.0
    with pytest.raises(BadArgument, match=r"no survey row for 'x'.*settings \['sgd lr 0.05', 'adam lr 0.0001'\]"):
        survey.share("x", "bf16")


# --- the checks: nonsense from the learner is a verdict, never a traceback ----------------------------------------
class _Run:
    class history:  # noqa: N801 (a stand-in for a PrecisionRun's History)
        val_loss = [NAN]


NONSENSE = [None, ..., "1e-8", True, [0.0], NAN, INF, 1j, int, torch.tensor([0.0, 1.0]), {"a": 1}]


@pytest.mark.parametrize("answer", NONSENSE, ids=repr)
def test_question_checks_turn_nonsense_into_a_verdict(answer, tiny, nets, capsys):
    survey = H.lost_update_survey(nets.models, tiny, settings=[("adam", 1e-4)])
    for result in (C.check_eps_in_fp16(answer, _Run()), C.check_largest_lost_update(answer),
                   C.check_most_lost_layer(answer, survey)):
        assert result.status in ("wrong", "not_written")
    out = capsys.readouterr().out
    assert "Correct" not in out and "Traceback" not in out


def test_question_checks_without_the_run_they_read(capsys):
    assert C.check_eps_in_fp16(0.0, None).ok  # the answer is still judged; the run only adds a remark
    assert "run the pure-fp16 Adam cell" in capsys.readouterr().out
    result = C.check_most_lost_layer("4.bias", None)
    assert result.status == "wrong" and "run the survey cell" in result.message
    for w in (True, -6.0, NAN, 6.1):
        with pytest.raises(BadArgument, match="w="):
            C.check_largest_lost_update(0.015625, w=w)


@pytest.mark.parametrize("fn", [int, 5, "f", lambda: 1, lambda w, u, d: None, lambda w, u, d: (1, 2),
                                lambda w, u, d: "3", lambda w, u, d: True, lambda w, u, d: NAN,
                                lambda w, u, d: 1 / 0, lambda *, w, u, dtype: 0],
                         ids=["class", "int", "str", "no-args", "None", "tuple", "str-out", "bool", "nan", "raises",
                              "kw-only"])
def test_counter_check_turns_nonsense_into_a_verdict(fn, capsys):
    assert C.check_count_lost_updates(fn).status == "wrong"
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:") and "Traceback" not in out


@pytest.mark.parametrize("fn", [int, 5, lambda: 1, lambda x, g: None, lambda x, g: (x, x), lambda x, g: x,
                                lambda x, g: x.tolist(), lambda x, g: x.to(BF16)[:1], lambda x, g: x.to(torch.int32),
                                lambda x, g: 1 / 0, lambda x: x.to(BF16), lambda x, g: x.numpy()],
                         ids=["class", "int", "no-args", "None", "tuple", "fp32", "list", "shape", "int32", "raises",
                              "one-arg", "numpy"])
def test_rounding_check_turns_nonsense_into_a_verdict(fn, capsys):
    assert C.check_stochastic_round_bf16(fn).status == "wrong"
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:") and "Traceback" not in out


# --- property tests: the rounding functions against torch's own casts -------------------------------------------
LOW = [BF16, torch.float16]
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)  # all finite float32, subnormals too


@FAST
@given(xs=st.lists(finite32, min_size=1, max_size=16), dtype=st.sampled_from(LOW))
def test_torch_casts_round_to_nearest_even(xs, dtype):
    """torch's float32 -> bf16/fp16 cast (reference.round_nearest) is the exact round-to-nearest-even that the checks
    compute independently from the candidates around it (within the format's range)."""
    x = torch.tensor(xs, dtype=torch.float32)
    x = x[x.abs() <= torch.finfo(dtype).max]
    assert torch.equal(R.round_nearest(x, dtype), C.round_exact(x.double(), dtype))


@FAST
@given(xs=st.lists(finite32, min_size=1, max_size=16), dtype=st.sampled_from(LOW))
def test_neighbours_bracket_x_and_the_cast_picks_the_nearer(xs, dtype):
    x = torch.tensor(xs, dtype=torch.float32)
    x = x[x.abs() <= torch.finfo(dtype).max]
    lo, hi = R.neighbours(x, dtype)
    assert bool(((lo <= x) & (x < hi)).all())
    assert torch.equal(lo.to(dtype).float(), lo) and torch.equal(hi.to(dtype).float(), hi)  # numbers of the format
    near = R.round_nearest(x, dtype).float()
    assert bool(((near == lo) | (near == hi)).all())
    assert bool(((near - x).abs() <= (hi - lo) / 2).all())


@FAST
@given(xs=st.lists(finite32, min_size=1, max_size=32), dtype=st.sampled_from(LOW), seed=st.integers(0, 2**31))
def test_stochastic_round_picks_a_neighbour_and_keeps_shape(xs, dtype, seed):
    x = torch.tensor(xs, dtype=torch.float32)
    x = x[x.abs() <= torch.finfo(dtype).max]
    out = R.stochastic_round(x, dtype, torch.Generator().manual_seed(seed))
    assert out.dtype == dtype and out.shape == x.shape
    lo, hi = R.neighbours(x, dtype)
    assert bool(((out.float() == lo) | (out.float() == hi)).all())
    exact = x.to(dtype).float() == x
    assert torch.equal(out.float()[exact], x[exact])  # numbers of the format stay


@FAST
@given(ws=st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=16),
       us=st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=16, max_size=16),
       dtype=st.sampled_from(LOW + [torch.float32]))
def test_count_lost_updates_matches_an_exact_count(ws, us, dtype):
    """The reference's count against one made elementwise in float64: the step's float32 sum (exactly rounded in
    numpy) rounded once more to the storage format, ties to even, by the checks' exact rounding."""
    w = torch.tensor(ws, dtype=torch.float32).to(dtype)
    u = torch.tensor(us[:len(ws)], dtype=torch.float32)
    s32 = (np.float32(w.float().numpy()) + u.numpy()).astype(np.float64)  # w + u as the float32 step computes it
    stored = C.round_exact(torch.from_numpy(s32), dtype)
    expected = int(((stored == w.double()) & (u != 0)).sum())
    assert R.count_lost_updates(w, u, dtype) == expected


@FAST
@given(scale=st.one_of(st.floats(1e-3, 1e6), st.integers(1, 10**6)), interval=st.integers(1, 5000))
def test_loss_scaler_takes_any_sane_number(scale, interval):
    s = R.LossScaler(scale, interval=interval)
    assert s.scale == float(scale) and s.interval == interval
    assert math.isfinite(s.scale)
