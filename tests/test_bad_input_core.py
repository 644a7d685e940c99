"""Bad input at the core's public boundary: a clear error naming the argument, the value and the fix; never a raw
numpy/torch error, never a silent wrong result; numpy scalars are numbers, bools are not. Plus property tests of
the core numpy layers and validators (Hypothesis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib import cache, lsh, memcap, models, numpy_layers, processes, seeds, training
from lessons_lib.data import load
from lessons_lib.device import DeviceUnavailableError, synchronize
from lessons_lib.gradcheck import numerical_gradient, numerical_gradient_array, relative_error
from lessons_lib.timing import Stopwatch, time_it
from lessons_lib.validate import BadArgument, check_float, check_int, check_p, check_shape

NO_CUDA = not torch.cuda.is_available()
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


# --- seeds ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["-1", "99999999999999999999", "4294967296"])
def test_out_of_range_course_seed_is_named(monkeypatch, raw):
    monkeypatch.setenv("LESSONS_SEED", raw)
    with pytest.raises(ValueError, match=r"LESSONS_SEED=.*out of range.*0 to 4294967295"):
        seeds.seed_everything()


@pytest.mark.parametrize("bad", [-1, True, 2.5, "3", 2**32])
def test_bad_explicit_seed(bad):
    with pytest.raises(BadArgument, match="seed="):
        seeds.seed_everything(bad)


def test_numpy_integer_seed_is_a_seed():
    assert seeds.seed_everything(np.int64(3)) == 3
    assert seeds.numpy_rng(np.uint32(4)).integers(10) == seeds.numpy_rng(4).integers(10)


# --- devices: a missing GPU gets the course's message, wherever it is asked for --------------------------------
@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("call", [
    lambda: synchronize("cuda"),
    lambda: synchronize(torch.device("cuda")),
    lambda: time_it(lambda: None, device="cuda"),
    lambda: Stopwatch("cuda"),
    lambda: training.fit(models.mlp(40, [8], 10), load("mnist1d").subset_train(64), epochs=1,
                         device=torch.device("cuda")),
])
def test_no_gpu_is_the_courses_message_not_torchs_assertion(call):
    with pytest.raises(DeviceUnavailableError, match="No GPU is visible.*device='cpu'"):
        call()


# --- models and fit -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"widths": [8.7]}, r"widths\[0\]=8.7: must be a whole number"),
    ({"widths": 8}, "widths=8: must be a list"),
    ({"widths": [0]}, r"widths\[0\]=0"),
    ({"dropout": "0.5"}, "dropout='0.5': .*got str"),
    ({"dropout": True}, "dropout=True: .*got bool"),
    ({"dropout": float("nan")}, "dropout=nan"),
    ({"activation": "swish"}, "activation='swish': must be one of"),
])
def test_mlp_refuses_what_it_cannot_build(kwargs, match):
    args = {"n_in": 40, "widths": [16], "n_out": 10} | kwargs
    with pytest.raises(BadArgument, match=match):
        models.mlp(**args)


def test_mlp_takes_numpy_scalars():
    m = models.mlp(np.int64(40), [np.int32(8), 8.0], np.int64(10), dropout=np.float32(0.25))
    assert [layer.out_features for layer in m if isinstance(layer, torch.nn.Linear)] == [8, 8, 10]


@pytest.fixture(scope="module")
def tiny():
    return load("mnist1d").subset_train(64)


def test_fit_names_a_wrong_input_width(tiny):
    with pytest.raises(ValueError, match=r"cannot take data.x_train's rows of shape \(40,\).*n_in=40"):
        training.fit(models.mlp(30, [8], 10), tiny, epochs=1)


def test_fit_names_labels_the_model_cannot_score(tiny):
    with pytest.raises(ValueError, match=r"labels 0..9 but the model has 5 outputs.*n_out=10"):
        training.fit(models.mlp(40, [8], 5), tiny, epochs=1)
    bad = type(tiny)(tiny.name, tiny.x_train, tiny.y_train.float(), tiny.x_val, tiny.y_val, tiny.x_test,
                     tiny.y_test, tiny.n_classes)
    with pytest.raises(ValueError, match="must be int64"):
        training.fit(models.mlp(40, [8], 10), bad, epochs=1)


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, "epochs=0"), ({"epochs": 1.5}, "epochs=1.5"),
                                           ({"batch_size": True}, "batch_size=True"), ({"lr": float("nan")}, "lr=nan"),
                                           ({"lr": -1}, "lr=-1")])
def test_fit_refuses_bad_settings(tiny, kwargs, match):
    with pytest.raises(BadArgument, match=match):
        training.fit(models.mlp(40, [8], 10), tiny, **kwargs)


def test_time_it_refuses_bad_settings():
    with pytest.raises(BadArgument, match="repeats=0"):
        time_it(lambda: None, repeats=0)
    with pytest.raises(BadArgument, match="fn=3: must be a function"):
        time_it(3)


# --- numpy layers and gradient checks --------------------------------------------------------------------------
def test_backward_refuses_a_wrong_shaped_upstream_gradient():
    out, cache_ = numpy_layers.relu_forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"relu_backward: dout has shape \(3,\) but the forward output had shape "
                                         r"\(4, 3\)"):
        numpy_layers.relu_backward(np.ones(3), cache_)
    _, c = numpy_layers.linear_forward(np.ones((4, 3)), np.ones((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="linear_backward: dout has shape"):
        numpy_layers.linear_backward(np.ones((1, 2)), c)


@pytest.mark.parametrize("y", [np.array([0, -1]), np.array([0, 3]), np.array([0.0, 1.0])])
def test_cross_entropy_refuses_labels_outside_the_classes(y):
    with pytest.raises(ValueError, match="labels y must be integers in 0..2"):
        numpy_layers.softmax_cross_entropy_forward(np.zeros((2, 3)), y)


def test_numerical_gradient_refuses_integers():
    with pytest.raises(ValueError, match="floating-point.*astype"):
        numerical_gradient(lambda: 0.0, np.arange(3))


shapes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))


@FAST
@given(shapes, st.integers(0, 2**31 - 1))
def test_linear_backward_matches_centred_differences(shape, seed):
    n, d_in, d_out = shape
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)), rng.standard_normal(d_out)
    dout = rng.standard_normal((n, d_out))
    out, c = numpy_layers.linear_forward(x, w, b)
    assert out.shape == (n, d_out) and out.dtype == np.float64
    dx, dw, db = numpy_layers.linear_backward(dout, c)
    assert relative_error(dw, numerical_gradient_array(lambda: numpy_layers.linear_forward(x, w, b)[0], w, dout)) < 1e-6
    assert dx.shape == x.shape and db.shape == b.shape


@FAST
@given(st.integers(1, 6), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_cross_entropy_properties(n, classes, seed):
    rng = np.random.default_rng(seed)
    logits, y = rng.standard_normal((n, classes)) * 5, rng.integers(0, classes, n)
    loss, c = numpy_layers.softmax_cross_entropy_forward(logits, y)
    grad = numpy_layers.softmax_cross_entropy_backward(c)
    assert loss >= 0 and np.allclose(grad.sum(axis=1), 0.0, atol=1e-12)
    num = numerical_gradient(lambda: numpy_layers.softmax_cross_entropy_forward(logits, y)[0], logits)
    # norm-wise: an element-wise ratio blows up on entries that are ~0 (a near-certain class)
    assert np.linalg.norm(grad - num) / (np.linalg.norm(grad) + np.linalg.norm(num) + 1e-12) < 1e-7


@FAST
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(),
                 st.text(max_size=3)))
def test_check_p_accepts_exactly_the_drop_probabilities(p):
    ok = not isinstance(p, (bool, str)) and 0 <= p < 1
    if ok:
        assert check_p(p) == float(p)
    else:
        with pytest.raises(BadArgument, match="probability to DROP"):
            check_p(p)


@FAST
@given(st.lists(st.one_of(st.integers(-2, 9), st.floats(-2, 9, allow_nan=False), st.booleans()), max_size=4))
def test_check_shape_never_truncates(dims):
    valid = all(not isinstance(d, bool) and float(d) == int(d) and d >= 0 for d in dims)
    if valid:
        assert check_shape(dims) == tuple(int(d) for d in dims)
    else:
        with pytest.raises(BadArgument):
            check_shape(dims)


def test_numbers_follow_one_rule():
    assert check_int(np.int64(3), "patience", low=0) == 3 and check_float(np.float32(1e-5), "eps") > 0
    for bad in (True, "3", None, [3]):
        with pytest.raises(BadArgument):
            check_int(bad, "patience")


# --- files ----------------------------------------------------------------------------------------------------
def test_written_files_are_readable_by_everyone(tmp_path):
    cache.atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_a_killed_writer_leaves_no_temporary_after_the_next_write(tmp_path):
    code = ("import sys, time; from lessons_lib.cache import atomic_open\n"
            f"with atomic_open({str(tmp_path / 'big.bin')!r}) as f:\n"
            "    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)  # no cleanup runs
    child.wait(10)
    left = list(tmp_path.glob(".*.tmp"))
    assert len(left) == 1 and not (tmp_path / "big.bin").exists()
    cache.atomic_write_bytes(tmp_path / "other.bin", b"y")
    assert not list(tmp_path.glob(".*.tmp")), "the dead writer's temporary file was swept"


def test_an_unwritable_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "mkstemp", refuse)
    with pytest.raises(cache.CacheWriteError, match="Permission denied.*LESSONS_DATA_DIR"):
        cache.atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert not list(tmp_path.iterdir())


def test_data_dir_that_is_a_file_is_named(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("LESSONS_DATA_DIR", str(f))
    with pytest.raises(cache.CacheWriteError):
        cache.data_dir()


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with cache.atomic_open(tmp_path / "c.bin") as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())
    time.sleep(0)


# --- hashing tables, process helpers, repeated seeds -----------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: lsh.SimHash(2.5, 4, 2), "dim=2.5"),  # was: silently hashed 2-wide vectors
    (lambda: lsh.SimHash(True, 4, 2), "dim=True"),
    (lambda: lsh.LshIndex(8, 0), "n_units=0"),  # was: an index over no units
    (lambda: lsh.RebuildSchedule(10, float("nan")), "growth=nan"),  # was: accepted, then never rebuilt
    (lambda: lsh.RebuildSchedule(2.5), "first=2.5"),
    (lambda: lsh.units_kept(-1, 0.5), "n_units=-1"),  # was: 1
    (lambda: lsh.units_kept(10.5, 0.5), "n_units=10.5"),  # was: 5
    (lambda: lsh.check_active_fraction(0.0), "active_fraction=0.0"),
    (lambda: lsh.pooling_matrix(10, 11), "pool_dim=11"),
    (lambda: seeds.replicate_seeds(3, stream=-1), "stream=-1"),  # was: seeds from a negative stream
    (lambda: seeds.replicate_seeds(True), "n=True"),
    (lambda: processes.resolve_port(True), "port=True"),  # was: port 1
    (lambda: processes.resolve_port(70000), "port=70000"),
    (lambda: memcap.run_child("math:sqrt", {"x": 4}, timeout=float("nan")), "timeout=nan"),  # was: raw int(nan)
    (lambda: memcap.run_child("math:sqrt", {"x": 4}, cap_bytes=-1), "cap_bytes=-1"),  # was: a child that failed
    (lambda: memcap.run_child("math:sqrt", {"x": 4}, threads=0), "threads=0"),
])
def test_core_helpers_name_bad_arguments(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_simhash_on_a_missing_gpu_is_the_courses_message():
    with pytest.raises(DeviceUnavailableError):
        lsh.SimHash(8, 4, 2, device="cuda")
    with pytest.raises(DeviceUnavailableError):
        lsh.SimHash(8, 4, 2).to("cuda")


def test_numpy_scalars_are_accepted_by_the_hashing_helpers():
    assert lsh.units_kept(np.int64(10), np.float32(0.5)) == 5
    assert lsh.SimHash(np.int64(8), 4, 2, seed=0).dim == 8
    assert seeds.replicate_seeds(np.int64(3), stream=np.int32(1)) == seeds.replicate_seeds(3, stream=1)


def test_stop_after_steps_and_save_arrays_name_bad_input(tmp_path):
    from lessons_lib.callbacks import StopAfterSteps

    for bad in (0, 2.5, True, "3"):
        with pytest.raises(BadArgument, match="n="):
            StopAfterSteps(bad)
    assert StopAfterSteps(np.int64(3)).n == 3
    with pytest.raises(ValueError, match="got no arrays"):
        cache.save_arrays(tmp_path / "empty.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [({"timeout_s": float("nan")}, "timeout_s=nan"),
                                           ({"timeout_s": 0}, "timeout_s=0"),
                                           ({"timeout_s": 5, "deadline_s": -1}, "deadline_s=-1")])
def test_launch_names_bad_timeouts_before_starting_anything(kwargs, match):
    with pytest.raises(BadArgument, match=match):
        processes.launch(print, processes=1, **kwargs)
